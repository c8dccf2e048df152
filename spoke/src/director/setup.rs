//! Setup inside members through the pods/exec API (websocket): file injections, configmeta,
//! the app's setup package (fetched, unpacked to `/opt/guestconfig`, `startscript
//! --configure` started in the background and its status file polled) and lifecycle
//! notifications. The same shell steps as upstream KubeDirector, so existing setup packages
//! run unchanged.
//!
//! Every command is `sh -c <script> sh <args>...`: data travels as arguments, never on
//! stdin, and success is read from the exec status and from markers the script prints,
//! never from exit codes alone (not every runtime reports them). Each exec is time-bound,
//! and the `app` container's id is checked after each step: a replaced container
//! interrupts the setup.
//!
//! When the platform team supplies a configcli package, members of roles with a setup
//! package get it installed before their package ("node prep", as upstream), so scripts
//! that call `configcli`, `bdvcli` or `bd_vcli` run unchanged.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::AsyncReadExt;

use super::members::SetupOutcome;
use super::names;

/// Where the setup package is unpacked.
pub const GUESTCONFIG: &str = "/opt/guestconfig";
/// `<container id>=<exit status>` of the last `--configure` run (status empty while running).
pub const STATUS_FILE: &str = "/opt/guestconfig/configure.status";
/// Output of the last `--configure` run.
pub const STDOUT_FILE: &str = "/opt/guestconfig/configure.stdout";
/// Errors of the last `--configure` run.
pub const STDERR_FILE: &str = "/opt/guestconfig/configure.stderr";
/// Bytes of script output kept in `configErrorDetail` when the app names no size.
pub const DEFAULT_MAX_LOG_SIZE_DUMP: i32 = 1024;
/// Longest time one exec step may take.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time one notification (`startscript --addnodes|--delnodes`) may take.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest time configcli's `install` may take (upstream's runs `python setup.py install`).
pub const CONFIGCLI_INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest piece of a file passed in one exec. Arguments travel in the request URI, which
/// the HTTP client caps at 64 KiB; percent-encoding at most triples a byte, and the script
/// and path need the rest.
const CHUNK: usize = 16 * 1024;
const _: () = assert!(3 * CHUNK + 8 * 1024 < 65_534);

/// Installed by the configcli package; node prep is skipped when it exists.
pub const CONFIGCLI: &str = "/usr/bin/configcli";
/// Where newer configcli packages install (upstream's later `ConfigCliLoc`); a member that
/// has it gets upstream's legacy links in `/usr/bin` instead of an install.
pub const CONFIGCLI_LOCAL: &str = "/usr/local/bin/configcli";

/// Upstream's links for scripts that expect configcli in `/usr/bin` when it lives in
/// `/usr/local/bin` (`ccli` and `configmacro` only when the package has them).
const LEGACY_LINKS: &str = "for n in bdvcli bd_vcli configcli; do ln -sf /usr/local/bin/configcli /usr/bin/$n || exit 1; done; \
for n in ccli configmacro; do [ ! -e /usr/local/bin/$n ] || ln -sf /usr/local/bin/$n /usr/bin/$n || exit 1; done";

/// A configcli package (a tgz whose top folder is `configcli-<version>/` holding an
/// executable `install`), kept base64-encoded: it reaches members as exec arguments.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigcliPackage {
    encoded: Arc<str>,
    bytes: usize,
}

impl ConfigcliPackage {
    /// The package from its bytes.
    pub fn new(tgz: &[u8]) -> Self {
        ConfigcliPackage { encoded: base64::engine::general_purpose::STANDARD.encode(tgz).into(), bytes: tgz.len() }
    }

    /// Reads the package from the spoke's filesystem.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        Ok(Self::new(&std::fs::read(path)?))
    }
}

impl std::fmt::Debug for ConfigcliPackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfigcliPackage({} bytes)", self.bytes)
    }
}

/// A file downloaded into the member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// Source URL.
    pub src_url: String,
    /// Destination directory.
    pub dest_dir: String,
    /// Octal mode, if any.
    pub mode: Option<i32>,
    /// Owner, if any.
    pub owner: Option<String>,
    /// Group, if any.
    pub group: Option<String>,
}

/// What to set up in one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSetup {
    /// Pod name.
    pub pod: String,
    /// Id of the `app` container the setup is for.
    pub container_id: String,
    /// Files to inject first.
    pub injections: Vec<Injection>,
    /// The setup package URL, if the role has one.
    pub package_url: Option<String>,
    /// The member's configmeta (JSON).
    pub configmeta: String,
    /// Bytes of stdout/stderr kept in the error detail.
    pub max_log_size_dump: usize,
    /// The app needs systemd: setup waits until it answers in the member.
    pub systemd_required: bool,
    /// Run `startscript --configure` (false when the role's `eventList` leaves out
    /// `configure`: the package is installed and configmeta written, nothing run).
    pub run_configure: bool,
    /// The configcli package to install before the setup package, if the spoke has one.
    pub configcli: Option<ConfigcliPackage>,
}

/// Why an exec could not run to completion.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The API server or the kubelet refused or failed the request.
    #[error("exec in pod {pod}: {source}")]
    Kube {
        /// Pod.
        pod: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The command did not finish in time.
    #[error("exec in pod {pod}: no answer within {seconds}s")]
    Timeout {
        /// Pod.
        pod: String,
        /// Limit.
        seconds: u64,
    },
    /// The streams broke.
    #[error("exec in pod {pod}: {message}")]
    Stream {
        /// Pod.
        pod: String,
        /// What broke.
        message: String,
    },
}

/// Output of one command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The command succeeded.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The failure message of the exec status, if it failed.
    pub message: String,
}

/// Runs `sh -c script sh args...` in the pod's `app` container, within `limit`.
pub async fn run(
    pods: &Api<Pod>,
    pod: &str,
    script: &str,
    args: &[&str],
    limit: Duration,
) -> Result<Output, ExecError> {
    let mut command: Vec<String> = vec!["sh".into(), "-c".into(), script.into(), "sh".into()];
    command.extend(args.iter().map(|a| a.to_string()));
    let params = AttachParams::default().container(names::APP_CONTAINER).stdin(false).stdout(true).stderr(true);
    let work = async {
        let mut process =
            pods.exec(pod, command, &params).await.map_err(|source| ExecError::Kube { pod: pod.into(), source })?;
        let broken = |what: &str| ExecError::Stream { pod: pod.into(), message: what.to_string() };
        let mut stdout = process.stdout().ok_or_else(|| broken("no stdout"))?;
        let mut stderr = process.stderr().ok_or_else(|| broken("no stderr"))?;
        let status = process.take_status().ok_or_else(|| broken("no status"))?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        a.map_err(|e| broken(&e.to_string()))?;
        b.map_err(|e| broken(&e.to_string()))?;
        let status = status.await;
        let _ = process.join().await;
        let success = status.as_ref().is_some_and(|s| s.status.as_deref() == Some("Success"));
        let message = status.and_then(|s| s.message).unwrap_or_default();
        Ok(Output {
            success,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            message,
        })
    };
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(ExecError::Timeout { pod: pod.into(), seconds: limit.as_secs() }),
    }
}

/// The `app` container's current id, if the pod exists and has one.
pub async fn container_id(pods: &Api<Pod>, pod: &str) -> Option<String> {
    let pod = pods.get_opt(pod).await.ok()??;
    pod.status?
        .container_statuses?
        .into_iter()
        .find(|c| c.name == names::APP_CONTAINER)?
        .container_id
        .filter(|id| !id.is_empty())
}

/// Writes `content` to `path` in the member (in chunks, replacing the file atomically).
pub async fn write_file(pods: &Api<Pod>, pod: &str, path: &str, content: &str) -> Result<Output, ExecError> {
    let chunks = chunks(content, CHUNK);
    let partial = format!("{path}.kdfed-partial");
    for (i, chunk) in chunks.iter().enumerate() {
        let redirect = if i == 0 { ">" } else { ">>" };
        let script = format!("mkdir -p \"$(dirname \"$1\")\" && printf '%s' \"$2\" {redirect} \"$1\" && echo kdfed-ok");
        let out = run(pods, pod, &script, &[&partial, chunk], EXEC_TIMEOUT).await?;
        if !marked(&out) {
            return Ok(out);
        }
    }
    run(pods, pod, "mv -f \"$1\" \"$2\" && echo kdfed-ok", &[&partial, path], EXEC_TIMEOUT).await
}

fn chunks(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > size {
        let mut cut = size;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

fn marked(out: &Output) -> bool {
    out.success && out.stdout.lines().any(|l| l == "kdfed-ok")
}

fn failure(out: &Output) -> String {
    let text = if out.stderr.trim().is_empty() { out.message.trim() } else { out.stderr.trim() };
    text.to_string()
}

/// The last `max` bytes of `text` (on a character boundary).
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The `--configure` run a status file describes, for the container `container_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigureStatus {
    /// Never started (no file, or an unreadable one).
    NotStarted,
    /// Started in this container, still running.
    Running,
    /// Finished in this container (or, successfully, in an earlier one on the same volume).
    Finished(i32),
    /// Left unfinished or failed by an earlier container: start again.
    Stale,
}

/// Parses `<container id>=<exit status>`; a member on a volume keeps a successful earlier
/// run, and re-runs an interrupted or failed one (upstream's rule).
pub fn parse_status(text: Option<&str>, container_id: &str) -> ConfigureStatus {
    let Some(text) = text else { return ConfigureStatus::NotStarted };
    let Some((id, code)) = text.trim_end_matches('\n').split_once('=') else { return ConfigureStatus::NotStarted };
    let code = code.trim();
    let same = id == container_id;
    match (same, code.is_empty(), code.parse::<i32>()) {
        (true, true, _) => ConfigureStatus::Running,
        (true, false, Ok(c)) => ConfigureStatus::Finished(c),
        (false, false, Ok(0)) => ConfigureStatus::Finished(0),
        (true, false, Err(_)) => ConfigureStatus::Finished(-1),
        _ => ConfigureStatus::Stale,
    }
}

/// Reads a file; `None` when it does not exist.
async fn read_file(pods: &Api<Pod>, pod: &str, path: &str) -> Result<Option<String>, ExecError> {
    let out = run(
        pods,
        pod,
        "if [ -f \"$1\" ]; then echo kdfed-present; cat \"$1\"; else echo kdfed-absent; fi",
        &[path],
        EXEC_TIMEOUT,
    )
    .await?;
    Ok(out.stdout.strip_prefix("kdfed-present\n").map(str::to_string))
}

/// Script that downloads a file (curl, or wget, or a plain copy for `file://`).
const FETCH: &str = r#"fetch() {
  if command -v curl >/dev/null 2>&1; then curl -fsSL "$1" -o "$2"
  elif [ "${1#file://}" != "$1" ]; then cp "${1#file://}" "$2"
  else wget -q -O "$2" "$1"; fi
}"#;

/// Downloads one injected file and sets its mode and ownership.
fn injection_script() -> String {
    format!(
        r#"set -e
{FETCH}
mkdir -p "$2"; cd "$2"
f="$2/$(basename "$1")"
fetch "$1" "$f"
[ -z "$3" ] || chmod "$3" "$f"
[ -z "$4" ] || chown "$4" "$f"
[ -z "$5" ] || chgrp "$5" "$f"
echo kdfed-ok"#
    )
}

/// Fetches the setup package into `/opt/guestconfig` unless a startscript is there already.
fn install_script() -> String {
    format!(
        r#"set -e
{FETCH}
if ls {GUESTCONFIG}/*/startscript >/dev/null 2>&1; then echo kdfed-ok; exit 0; fi
mkdir -p {GUESTCONFIG}
cd {GUESTCONFIG}
rm -rf {GUESTCONFIG}/*
fetch "$1" appconfig.tgz
tar xzf appconfig.tgz
chmod +x {GUESTCONFIG}/*/startscript
rm -f appconfig.tgz
echo kdfed-ok"#
    )
}

/// Starts `startscript --configure` in the background, recording `<container id>=<status>`.
fn configure_script() -> String {
    format!(
        r#"rm -f {GUESTCONFIG}/configure.*
printf '%s=' "$1" > {STATUS_FILE}
nohup sh -c '{GUESTCONFIG}/*/startscript --configure; printf %s $? >> {STATUS_FILE}' > {STDOUT_FILE} 2> {STDERR_FILE} < /dev/null &
echo kdfed-ok"#
    )
}

/// Installs an uploaded configcli package the way upstream's node prep does (unpack, run
/// `configcli-*/install`, link `bdvcli` and `bd_vcli` to it), in the private staging folder
/// `$1` under /tmp rather than in /tmp itself, so that installs sharing a /tmp (a hostPath
/// /tmp, the test bed) cannot remove each other's files; `install` finds its own folder.
/// The staging folder is removed whatever happens.
fn configcli_install_script() -> String {
    format!(
        r#"d="$1"
if ! base64 -d "$d/configcli.tgz.base64" > "$d/configcli.tgz"; then
  echo "cannot decode the uploaded package" >&2; rm -rf "$d"; exit 1
fi
rm -f "$d/configcli.tgz.base64"
cd "$d" && tar xzf configcli.tgz && chmod +x "$d"/configcli-*/install && "$d"/configcli-*/install \
  && rm -rf "$d"/configcli-* && rm -f "$d/configcli.tgz" \
  && if [ -f {CONFIGCLI} ]; then ln -sf {CONFIGCLI} /usr/bin/bdvcli && ln -sf {CONFIGCLI} /usr/bin/bd_vcli; \
     elif [ -f {CONFIGCLI_LOCAL} ]; then ( {LEGACY_LINKS} ); fi
status=$?
cd /
rm -rf "$d"
if [ "$status" -ne 0 ]; then exit "$status"; fi
if [ ! -f {CONFIGCLI} ]; then echo "the package's install script did not create {CONFIGCLI}" >&2; exit 1; fi
echo kdfed-ok"#
    )
}

/// Upstream's systemd check: succeeds once systemd answers in the member.
pub const SYSTEMD_CHECK: &str = "systemctl status systemd-journald > /tmp/journald-status.out 2>&1";

/// Takes one member's setup as far as it goes this pass: returns `Running` while
/// `--configure` runs, `Done`, `Failed` with upstream's detail, `Interrupted` when the
/// container changed, `Waiting` while systemd does not answer, or `Retrying` when an exec
/// could not run (refused, timed out, broken streams), to be retried next pass.
pub async fn advance(pods: &Api<Pod>, setup: &MemberSetup) -> SetupOutcome {
    match try_advance(pods, setup).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::warn!(pod = %setup.pod, "setup step failed, will retry: {e}");
            SetupOutcome::Retrying(format!("setup of member{{{}}} could not run a step: {e}; will retry", setup.pod))
        }
    }
}

/// Whether systemd answers in the member (a failing or missing `systemctl` means no).
pub async fn systemd_ready(pods: &Api<Pod>, pod: &str) -> Result<bool, ExecError> {
    let out = run(pods, pod, &format!("{SYSTEMD_CHECK} && echo kdfed-ok"), &[], EXEC_TIMEOUT).await?;
    Ok(marked(&out))
}

async fn still_same(pods: &Api<Pod>, setup: &MemberSetup) -> bool {
    container_id(pods, &setup.pod).await.as_deref() == Some(setup.container_id.as_str())
}

async fn try_advance(pods: &Api<Pod>, setup: &MemberSetup) -> Result<SetupOutcome, ExecError> {
    let pod = setup.pod.as_str();
    let Some(_) = &setup.package_url else {
        // No package: file injections are the whole setup.
        return Ok(match inject(pods, setup).await? {
            Some(detail) => SetupOutcome::Failed(detail),
            None if !still_same(pods, setup).await => SetupOutcome::Interrupted,
            None => SetupOutcome::Done,
        });
    };
    let status = read_file(pods, pod, STATUS_FILE).await?;
    match parse_status(status.as_deref(), &setup.container_id) {
        ConfigureStatus::Running => return Ok(SetupOutcome::Running),
        ConfigureStatus::Finished(0) => return Ok(SetupOutcome::Done),
        ConfigureStatus::Finished(code) => {
            let max = setup.max_log_size_dump;
            let stdout = read_file(pods, pod, STDOUT_FILE).await?.unwrap_or_default();
            let stderr = read_file(pods, pod, STDERR_FILE).await?.unwrap_or_default();
            return Ok(SetupOutcome::Failed(format!(
                "execution of app config failed: configure failed with exit status {{{code}}}\n\
                 stderr (last {max} bytes):\n{}\nstdout (last {max} bytes):\n{}",
                tail(&stderr, max),
                tail(&stdout, max)
            )));
        }
        ConfigureStatus::NotStarted | ConfigureStatus::Stale => {}
    }
    if let Some(detail) = inject(pods, setup).await? {
        return Ok(SetupOutcome::Failed(detail));
    }
    if !still_same(pods, setup).await {
        return Ok(SetupOutcome::Interrupted);
    }
    // Upstream checks systemd after the injections and before anything else is written.
    if setup.systemd_required && !systemd_ready(pods, pod).await? {
        return Ok(SetupOutcome::Waiting(format!("systemd not yet responsive in member{{{pod}}}")));
    }
    let written = write_file(pods, pod, super::configmeta::PATH, &setup.configmeta).await?;
    if !marked(&written) {
        return Ok(SetupOutcome::Failed(format!(
            "execution of app config failed: cannot write configmeta: {}",
            failure(&written)
        )));
    }
    if !still_same(pods, setup).await {
        return Ok(SetupOutcome::Interrupted);
    }
    // Upstream's node prep: after configmeta (configcli's `install` touches it), before the
    // setup package whose scripts call it.
    if let Some(package) = &setup.configcli
        && let Some(outcome) = install_configcli(pods, setup, package).await?
    {
        return Ok(outcome);
    }
    let url = setup.package_url.as_deref().unwrap_or_default();
    let installed = run(pods, pod, &install_script(), &[url], EXEC_TIMEOUT).await?;
    if !marked(&installed) {
        return Ok(SetupOutcome::Failed(format!(
            "execution of app config failed: cannot install setup package {url}: {}",
            failure(&installed)
        )));
    }
    if !still_same(pods, setup).await {
        return Ok(SetupOutcome::Interrupted);
    }
    if !setup.run_configure {
        return Ok(SetupOutcome::Done);
    }
    let started = run(pods, pod, &configure_script(), &[&setup.container_id], EXEC_TIMEOUT).await?;
    if !marked(&started) {
        return Ok(SetupOutcome::Failed(format!(
            "execution of app config failed: cannot start startscript --configure: {}",
            failure(&started)
        )));
    }
    Ok(SetupOutcome::Running)
}

/// Installs configcli unless the member has it already (a member on a volume, an earlier
/// pass); `Some(outcome)` stops the setup (failed, or the container was replaced).
async fn install_configcli(
    pods: &Api<Pod>,
    setup: &MemberSetup,
    package: &ConfigcliPackage,
) -> Result<Option<SetupOutcome>, ExecError> {
    let pod = setup.pod.as_str();
    let failed = |what: String| Some(SetupOutcome::Failed(format!("failed to install configcli: {what}")));
    let check = format!(
        "if [ -f \"$1\" ]; then echo kdfed-present; \
         elif [ -f \"$2\" ]; then ( {LEGACY_LINKS} ) && echo kdfed-present; \
         else echo kdfed-absent; fi"
    );
    let present = run(pods, pod, &check, &[CONFIGCLI, CONFIGCLI_LOCAL], EXEC_TIMEOUT).await?;
    let lines = || present.stdout.lines();
    if !present.success || !lines().any(|l| l == "kdfed-present" || l == "kdfed-absent") {
        return Ok(failed(format!("cannot check for {CONFIGCLI}: {}", failure(&present))));
    }
    if lines().any(|l| l == "kdfed-present") {
        return Ok(None);
    }
    // One folder per attempt: nothing else writes there, even with a shared /tmp.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let staging = format!("/tmp/kdfed-configcli.{pod}.{nanos:x}");
    let copied = write_file(pods, pod, &format!("{staging}/configcli.tgz.base64"), &package.encoded).await?;
    if !marked(&copied) {
        let _ = run(pods, pod, "rm -rf \"$1\"", &[&staging], EXEC_TIMEOUT).await;
        let detail = tail(&failure(&copied), setup.max_log_size_dump).to_string();
        return Ok(failed(format!("cannot copy the package into the member: {detail}")));
    }
    if !still_same(pods, setup).await {
        return Ok(Some(SetupOutcome::Interrupted));
    }
    let installed = run(pods, pod, &configcli_install_script(), &[&staging], CONFIGCLI_INSTALL_TIMEOUT).await?;
    if !marked(&installed) {
        return Ok(failed(tail(&failure(&installed), setup.max_log_size_dump).to_string()));
    }
    if !still_same(pods, setup).await {
        return Ok(Some(SetupOutcome::Interrupted));
    }
    Ok(None)
}

/// Runs the file injections; `Some(detail)` when one failed.
async fn inject(pods: &Api<Pod>, setup: &MemberSetup) -> Result<Option<String>, ExecError> {
    for i in &setup.injections {
        let mode = i.mode.map(|m| format!("{m:o}")).unwrap_or_default();
        let args = [
            i.src_url.as_str(),
            i.dest_dir.as_str(),
            mode.as_str(),
            i.owner.as_deref().unwrap_or(""),
            i.group.as_deref().unwrap_or(""),
        ];
        let out = run(pods, &setup.pod, &injection_script(), &args, EXEC_TIMEOUT).await?;
        if !marked(&out) {
            return Ok(Some(format!("failed requested file injections: {}: {}", i.src_url, failure(&out))));
        }
    }
    Ok(None)
}

/// Delivers one lifecycle notification, `startscript <arguments>` (`--addnodes`,
/// `--delnodes` or `--reconnect`), waiting for it to finish; [`succeeded`] tells whether
/// the script succeeded (a failed one is retried later).
pub async fn notify(pods: &Api<Pod>, pod: &str, arguments: &[String]) -> Result<Output, ExecError> {
    let script = format!("cd {GUESTCONFIG} && {GUESTCONFIG}/*/startscript \"$@\" && echo kdfed-ok");
    let args: Vec<&str> = arguments.iter().map(String::as_str).collect();
    run(pods, pod, &script, &args, NOTIFY_TIMEOUT).await
}

/// Whether a command's output carries the success marker.
pub fn succeeded(out: &Output) -> bool {
    marked(out)
}

/// Status of the running upgrade or rollback script, `<container id>=<exit status>`.
pub const UPGRADE_STATUS_FILE: &str = "/opt/guestconfig/upgrade.status";
/// Output of the upgrade or rollback script.
pub const UPGRADE_STDOUT_FILE: &str = "/opt/guestconfig/upgrade.stdout";
/// Errors of the upgrade or rollback script.
pub const UPGRADE_STDERR_FILE: &str = "/opt/guestconfig/upgrade.stderr";

/// What a live upgrade (or rollback) runs in one member whose pod was recreated from the
/// other app's template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeSetup {
    /// Pod name.
    pub pod: String,
    /// Id of the new `app` container.
    pub container_id: String,
    /// The setup package of the app the member moves to.
    pub package_url: String,
    /// The member's configmeta (JSON) under the app it moves to.
    pub configmeta: String,
    /// `startscript` arguments (`--upgrade --from V` or `--rollback --from V`).
    pub arguments: Vec<String>,
    /// Bytes of stdout/stderr kept in the error detail.
    pub max_log_size_dump: usize,
}

/// Replaces the installed setup package by the one at `$1` (the persistent
/// `/opt/guestconfig` keeps the old one, and the status files of earlier runs stay).
fn reinstall_script() -> String {
    format!(
        r#"set -e
{FETCH}
mkdir -p {GUESTCONFIG}
cd {GUESTCONFIG}
for d in {GUESTCONFIG}/*/; do [ -d "$d" ] && rm -rf "$d"; done
fetch "$1" appconfig.tgz
tar xzf appconfig.tgz
chmod +x {GUESTCONFIG}/*/startscript
rm -f appconfig.tgz
echo kdfed-ok"#
    )
}

/// Starts `startscript <arguments>` in the background, recording `<container id>=<status>`.
fn upgrade_script() -> String {
    format!(
        r#"rm -f {GUESTCONFIG}/upgrade.*
printf '%s=' "$1" > {UPGRADE_STATUS_FILE}
shift
nohup sh -c 'cd {GUESTCONFIG} && {GUESTCONFIG}/*/startscript "$@"; printf %s $? >> {UPGRADE_STATUS_FILE}' kdfed-upgrade "$@" > {UPGRADE_STDOUT_FILE} 2> {UPGRADE_STDERR_FILE} < /dev/null &
echo kdfed-ok"#
    )
}

/// Where an upgrade script of `container_id` stands: only a run in this very container
/// counts (an earlier upgrade on the same volume ran in another one).
pub fn parse_upgrade_status(text: Option<&str>, container_id: &str) -> ConfigureStatus {
    let Some((id, code)) = text.and_then(|t| t.trim().split_once('=')) else { return ConfigureStatus::NotStarted };
    if id != container_id {
        return ConfigureStatus::NotStarted;
    }
    match code.trim() {
        "" => ConfigureStatus::Running,
        c => c.parse().map_or(ConfigureStatus::NotStarted, ConfigureStatus::Finished),
    }
}

/// Takes one member's upgrade (or rollback) as far as it goes this pass: writes configmeta,
/// installs the new package and starts the script once, then reports `Running`, `Done` or
/// `Failed` (exit status and output tails), or `Retrying` when an exec could not run.
pub async fn advance_upgrade(pods: &Api<Pod>, setup: &UpgradeSetup) -> SetupOutcome {
    match try_advance_upgrade(pods, setup).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::warn!(pod = %setup.pod, "upgrade step failed, will retry: {e}");
            SetupOutcome::Retrying(format!("upgrade of member{{{}}} could not run a step: {e}; will retry", setup.pod))
        }
    }
}

async fn try_advance_upgrade(pods: &Api<Pod>, setup: &UpgradeSetup) -> Result<SetupOutcome, ExecError> {
    let pod = setup.pod.as_str();
    let verb = setup.arguments.first().map(|a| a.trim_start_matches('-')).unwrap_or("upgrade").to_string();
    let status = read_file(pods, pod, UPGRADE_STATUS_FILE).await?;
    match parse_upgrade_status(status.as_deref(), &setup.container_id) {
        ConfigureStatus::Running => return Ok(SetupOutcome::Running),
        ConfigureStatus::Finished(0) => return Ok(SetupOutcome::Done),
        ConfigureStatus::Finished(code) => {
            let max = setup.max_log_size_dump;
            let stdout = read_file(pods, pod, UPGRADE_STDOUT_FILE).await?.unwrap_or_default();
            let stderr = read_file(pods, pod, UPGRADE_STDERR_FILE).await?.unwrap_or_default();
            return Ok(SetupOutcome::Failed(format!(
                "startscript --{verb} failed with exit status {{{code}}}; stderr: {}\n\
                 stderr (last {max} bytes):\n{}\nstdout (last {max} bytes):\n{}",
                tail(stderr.trim_end(), 200).lines().last().unwrap_or_default(),
                tail(&stderr, max),
                tail(&stdout, max)
            )));
        }
        ConfigureStatus::NotStarted | ConfigureStatus::Stale => {}
    }
    let written = write_file(pods, pod, super::configmeta::PATH, &setup.configmeta).await?;
    if !marked(&written) {
        return Ok(SetupOutcome::Failed(format!("{verb} failed: cannot write configmeta: {}", failure(&written))));
    }
    let url = setup.package_url.as_str();
    let installed = run(pods, pod, &reinstall_script(), &[url], EXEC_TIMEOUT).await?;
    if !marked(&installed) {
        return Ok(SetupOutcome::Failed(format!(
            "{verb} failed: cannot install setup package {url}: {}",
            failure(&installed)
        )));
    }
    if !still_same_container(pods, pod, &setup.container_id).await {
        return Ok(SetupOutcome::Interrupted);
    }
    let mut args: Vec<&str> = vec![setup.container_id.as_str()];
    args.extend(setup.arguments.iter().map(String::as_str));
    let started = run(pods, pod, &upgrade_script(), &args, EXEC_TIMEOUT).await?;
    if !marked(&started) {
        return Ok(SetupOutcome::Failed(format!("{verb} failed: cannot start startscript: {}", failure(&started))));
    }
    Ok(SetupOutcome::Running)
}

async fn still_same_container(pods: &Api<Pod>, pod: &str, expected: &str) -> bool {
    container_id(pods, pod).await.as_deref() == Some(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_status_counts_only_this_container() {
        assert_eq!(parse_upgrade_status(None, "c1"), ConfigureStatus::NotStarted);
        assert_eq!(parse_upgrade_status(Some("c1="), "c1"), ConfigureStatus::Running);
        assert_eq!(parse_upgrade_status(Some("c1=0\n"), "c1"), ConfigureStatus::Finished(0));
        assert_eq!(parse_upgrade_status(Some("c1=4"), "c1"), ConfigureStatus::Finished(4));
        // An upgrade on the same volume in an earlier container is another run.
        assert_eq!(parse_upgrade_status(Some("c0=0"), "c1"), ConfigureStatus::NotStarted);
        assert_eq!(parse_upgrade_status(Some("junk"), "c1"), ConfigureStatus::NotStarted);
    }

    #[test]
    fn status_files_are_read_per_container() {
        assert_eq!(parse_status(None, "c1"), ConfigureStatus::NotStarted);
        assert_eq!(parse_status(Some("c1="), "c1"), ConfigureStatus::Running);
        assert_eq!(parse_status(Some("c1=0"), "c1"), ConfigureStatus::Finished(0));
        assert_eq!(parse_status(Some("c1=3\n"), "c1"), ConfigureStatus::Finished(3));
        // An earlier container on the same volume: success stands, anything else re-runs.
        assert_eq!(parse_status(Some("c0=0"), "c1"), ConfigureStatus::Finished(0));
        assert_eq!(parse_status(Some("c0=3"), "c1"), ConfigureStatus::Stale);
        assert_eq!(parse_status(Some("c0="), "c1"), ConfigureStatus::Stale);
        assert_eq!(parse_status(Some("garbage"), "c1"), ConfigureStatus::NotStarted);
    }

    #[test]
    fn configcli_packages_travel_as_base64_and_stay_out_of_logs() {
        let package = ConfigcliPackage::new(&[0x1f, 0x8b, 0x08, 0xff]);
        assert_eq!(&*package.encoded, "H4sI/w==");
        assert_eq!(format!("{package:?}"), "ConfigcliPackage(4 bytes)");
    }

    #[test]
    fn tails_and_chunks_respect_characters() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab", 3), "ab");
        assert_eq!(tail("aé", 1), "");
        let text = "é".repeat(10);
        let parts = chunks(&text, 5);
        assert!(parts.iter().all(|p| p.len() <= 5));
        assert_eq!(parts.concat(), text);
        assert_eq!(chunks("", 5), vec![""]);
    }
}
