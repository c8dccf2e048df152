//! Exec that really runs for KWOK's fake pods. KWOK serves `pods/exec` by running the
//! command on the host in the work directory of the pod's `Exec` object
//! (`kwok.x-k8s.io/v1alpha1`). The test bed gives every pod its own directory,
//! `<cluster dir>/pods/<namespace>/<pod>/<uid>`, keeps one `Exec` per pod pointing at it, and
//! puts a wrapper first in KWOK's PATH as `sh`/`bash` that runs the command with the
//! container's directories (`/etc`, `/opt`, `/usr`, `/var`, ...) overlaid by the pod's
//! `fs/` folder. A recreated pod (new uid) starts from an empty folder, like a new container.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

/// The wrapper KWOK runs as `sh` and `bash`.
const WRAPPER: &str = include_str!("../testbed/exec/sh");

/// Field manager of the `Exec` objects.
const MANAGER: &str = "kdfed-testbed";

/// Folder of a pod's "filesystem" changes: container path `/etc/x` is `<this>/etc/x`.
pub fn pod_filesystem(cluster_dir: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    pod_dir(cluster_dir, namespace, pod, uid).join("fs")
}

fn pod_dir(cluster_dir: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    cluster_dir.join("pods").join(namespace).join(pod).join(uid)
}

/// Folder of the "filesystem" of the pods that mount the PVC `claim` (uid `claim_uid`): a
/// pod with a claim keeps its files with the claim, so a pod recreated on the same claim
/// finds what the one before wrote, and a new claim of the same name starts empty.
pub fn claim_filesystem(cluster_dir: &Path, namespace: &str, claim: &str, claim_uid: &str) -> PathBuf {
    claim_dir(cluster_dir, namespace, claim, claim_uid).join("fs")
}

fn claim_dir(cluster_dir: &Path, namespace: &str, claim: &str, claim_uid: &str) -> PathBuf {
    // Under `pods/` (the exec wrapper runs only there); no pod name starts with `_`.
    cluster_dir.join("pods").join(namespace).join("_claims").join(claim).join(claim_uid)
}

/// The claim of the pod's first PVC volume, if it has one.
fn first_claim(pod: &Pod) -> Option<String> {
    let volumes = pod.spec.as_ref()?.volumes.as_ref()?;
    volumes.iter().find_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
}

/// The folder a pod's exec runs in: its claim's (with the claim's uid) when it mounts one,
/// else its own (with its uid).
async fn work_dir(client: &Client, cluster_dir: &Path, ns: &str, pod: &Pod, uid: &str) -> Result<PathBuf> {
    let Some(claim) = first_claim(pod) else { return Ok(pod_dir(cluster_dir, ns, &pod.name_any(), uid)) };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let found = claims
        .get_opt(&claim)
        .await?
        .with_context(|| format!("claim {claim} of pod {} not there yet", pod.name_any()))?;
    let claim_uid = found.uid().with_context(|| format!("claim {claim} has no uid"))?;
    Ok(claim_dir(cluster_dir, ns, &claim, &claim_uid))
}

/// Writes the wrapper as `sh` and `bash` into `dir`, which goes first in KWOK's PATH.
pub(crate) fn write_wrappers(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    for name in ["sh", "bash"] {
        let path = dir.join(name);
        std::fs::write(&path, WRAPPER)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Installs KWOK's `Exec` CRD and waits until it is served.
pub(crate) async fn install_crd(client: &Client, crds_dir: &Path) -> Result<()> {
    let path = crds_dir.join("kwok.x-k8s.io_execs.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("create Exec CRD"),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let established = crds
            .get(&crd.name_any())
            .await?
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        if established {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the Exec CRD was not established after 60s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn exec_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "Exec"), "execs")
}

/// Keeps one `Exec` per pod, pointing at the pod's own directory, until aborted.
pub(crate) fn spawn_sync(client: Client, cluster_dir: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(client.clone());
        let mut done: HashMap<(String, String), String> = HashMap::new();
        let mut events = std::pin::pin!(watcher(pods, watcher::Config::default()));
        while let Some(event) = events.next().await {
            let pod = match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!("test bed exec sync: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let (Some(ns), Some(uid)) = (pod.namespace(), pod.uid()) else { continue };
            let key = (ns.clone(), pod.name_any());
            if done.get(&key) == Some(&uid) {
                continue;
            }
            match point_exec_at_pod(&client, &cluster_dir, &ns, &pod, &uid).await {
                Ok(()) => {
                    done.insert(key, uid);
                }
                Err(e) => tracing::warn!("test bed exec sync for {ns}/{}: {e:#}", pod.name_any()),
            }
        }
    })
}

async fn point_exec_at_pod(client: &Client, cluster_dir: &Path, ns: &str, pod: &Pod, uid: &str) -> Result<()> {
    let dir = work_dir(client, cluster_dir, ns, pod, uid).await?;
    let pod = pod.name_any();
    let pod = pod.as_str();
    std::fs::create_dir_all(dir.join("fs"))?;
    let execs: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &exec_resource());
    let object = serde_json::json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Exec",
        "metadata": {"name": pod, "namespace": ns},
        "spec": {"execs": [{"local": {"workDir": dir.display().to_string()}}]}
    });
    execs.patch(pod, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object)).await?;
    Ok(())
}

/// Writes a file into a fake pod's `app` container through exec, as `kubectl exec` would
/// (the pod's own mount namespace sees it at once; writing into the folder from the host
/// while the pod's overlays are mounted is undefined behaviour for overlayfs).
pub async fn write_pod_file(
    client: &Client,
    namespace: &str,
    pod: &str,
    path: &str,
    content: &str,
    mode: u32,
) -> Result<()> {
    // The exec request itself can fail in passing (a websocket refused while KWOK is busy):
    // try a few times, as `kubectl exec` users would, and report the last error.
    let mut last = None;
    for _ in 0..5 {
        match write_pod_file_once(client, namespace, pod, path, content, mode).await {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
}

async fn write_pod_file_once(
    client: &Client,
    namespace: &str,
    pod: &str,
    path: &str,
    content: &str,
    mode: u32,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let script = "mkdir -p \"$(dirname \"$1\")\" && printf %s \"$2\" > \"$1\" && chmod \"$3\" \"$1\" && echo written";
    let command = ["sh", "-c", script, "sh", path, content, &format!("{mode:o}")];
    let params = kube::api::AttachParams::default().container("app").stdin(false).stdout(true).stderr(true);
    let mut process = pods.exec(pod, command, &params).await.with_context(|| format!("exec in {namespace}/{pod}"))?;
    let mut out = String::new();
    let mut err = String::new();
    let mut stdout = process.stdout().context("no stdout")?;
    let mut stderr = process.stderr().context("no stderr")?;
    let (a, b) = tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err));
    a?;
    b?;
    let _ = process.join().await;
    if out.trim() != "written" {
        bail!("writing {path} in {namespace}/{pod} failed: {}", err.trim());
    }
    Ok(())
}
