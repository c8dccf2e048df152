//! Child processes of the test bed: each in its own process group, logging to a file,
//! killed as a whole group so nothing it started survives.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// A running component (etcd, kube-apiserver, ...).
#[derive(Debug)]
pub struct Process {
    /// Component name, also its log file's name.
    pub name: String,
    /// Process id, which is also its process-group id.
    pub pid: i32,
    child: Option<Child>,
    /// How it was started, to start it again ([`Process::respawn`]).
    recipe: Option<Recipe>,
}

/// A process's command line, log folder, lifetime and environment.
#[derive(Clone, Debug)]
struct Recipe {
    program: std::path::PathBuf,
    args: Vec<String>,
    logs: std::path::PathBuf,
    lifetime: Lifetime,
    envs: Vec<(String, String)>,
}

/// Whether the process dies with the test bed that started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed when the starting process (thread) dies, even by SIGKILL: for tests.
    TiedToParent,
    /// Keeps running after the starting process exits: for `testbed up`.
    Detached,
}

impl Process {
    /// Starts `program args` with output appended to `logs/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        logs: &Path,
        lifetime: Lifetime,
        envs: &[(String, String)],
    ) -> Result<Process> {
        std::fs::create_dir_all(logs)?;
        let log_path = logs.join(format!("{name}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
        for (k, v) in envs {
            command.env(k, v);
        }
        if lifetime == Lifetime::TiedToParent {
            // SAFETY: the closure runs in the forked child before exec and only calls
            // prctl(2), which is async-signal-safe.
            #[allow(unsafe_code)]
            unsafe {
                command
                    .pre_exec(|| nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL)).map_err(std::io::Error::from));
            }
        }
        let child = command.spawn().with_context(|| format!("start {name} ({})", program.display()))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        let recipe = Recipe {
            program: program.to_path_buf(),
            args: args.to_vec(),
            logs: logs.to_path_buf(),
            lifetime,
            envs: envs.to_vec(),
        };
        Ok(Process { name: name.to_string(), pid, child: Some(child), recipe: Some(recipe) })
    }

    /// Starts the same command again (same flags, ports, data folder and log file), e.g.
    /// after a test killed it. `None` for an adopted process, whose command is unknown.
    pub fn respawn(&self) -> Option<Result<Process>> {
        let r = self.recipe.as_ref()?;
        Some(Process::spawn(&self.name, &r.program, &r.args, &r.logs, r.lifetime, &r.envs))
    }

    /// A process known only by pid (from a `testbed up` state file).
    pub fn adopt(name: &str, pid: i32) -> Process {
        Process { name: name.to_string(), pid, child: None, recipe: None }
    }

    /// Whether the process has exited (only known for our own children; others by signal 0).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().map(|s| s.to_string()),
            None => kill(Pid::from_raw(self.pid), None).is_err().then(|| "gone".to_string()),
        }
    }

    /// Forgets the child handle so dropping it does not wait for or kill the process.
    pub fn release(&mut self) {
        self.child = None;
    }

    /// Terminates the whole process group: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let group = Pid::from_raw(self.pid);
        if grace > Duration::ZERO && killpg(group, Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && self.exited().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = killpg(group, Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop(Duration::ZERO);
        }
    }
}

/// How long a port handed out by [`free_port`] stays reserved for its caller: the time a
/// test bed may take between choosing a port and its server binding it (kwok binds after
/// the API server is ready), with a wide margin.
const PORT_RESERVATION: Duration = Duration::from_secs(600);

/// The lowest port [`free_port`] hands out.
const LOWEST_PORT: u16 = 12000;

/// A TCP port on 127.0.0.1 for a server that the test bed or a test is about to start.
///
/// A port the kernel picks (`bind` to port 0) comes from the ephemeral range, the same range
/// outgoing connections take their local ports from; with several tests in parallel one of
/// their connections can take the port in the seconds before the server binds it (CI saw
/// kwok fail with "address already in use" that way). So ports come from below the
/// ephemeral range, are checked free by binding them, and are reserved across processes for
/// [`PORT_RESERVATION`] by a file in a shared folder, so two parallel tests never get the
/// same one.
pub fn free_port() -> Result<u16> {
    let (low, high) = (LOWEST_PORT, ephemeral_low().saturating_sub(1));
    if high <= low + 1000 {
        // An unusual ephemeral range leaves no room below it: let the kernel pick.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        return Ok(listener.local_addr()?.port());
    }
    let folder = std::env::temp_dir().join("kdfed-testbed-ports");
    std::fs::create_dir_all(&folder).with_context(|| format!("create {}", folder.display()))?;
    let mut state = seed();
    for _ in 0..1000 {
        state = next_random(state);
        let port = low + (state % u64::from(high - low)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        if reserve(&folder.join(port.to_string()))? {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port between {low} and {high} after 1000 tries (reservations in {})", folder.display())
}

/// Takes the reservation file `path`: true if it did not exist or its reservation expired.
fn reserve(path: &Path) -> Result<bool> {
    let create = || std::fs::OpenOptions::new().write(true).create_new(true).open(path);
    match create() {
        Ok(_) => return Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("reserve port file {}", path.display())),
    }
    let expired = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().unwrap_or_default() > PORT_RESERVATION)
        .unwrap_or(false);
    if !expired {
        return Ok(false);
    }
    // Two processes may both see it expired: only one of them creates it again.
    let _ = std::fs::remove_file(path);
    Ok(create().is_ok())
}

/// The first port of the kernel's ephemeral range (Linux' default when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(32768)
}

/// A seed that differs between processes and calls.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

/// splitmix64: spreads consecutive states over the whole range.
fn next_random(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_are_not_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("port")).collect();
        let low = ephemeral_low();
        for p in &ports {
            assert!(*p >= LOWEST_PORT && *p < low, "port {p} outside {LOWEST_PORT}..{low}");
        }
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice: {ports:?}");
    }

    #[test]
    fn a_reservation_blocks_until_it_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("20000");
        assert!(reserve(&file).expect("first"));
        assert!(!reserve(&file).expect("second"), "a live reservation was handed out again");
        let old = std::time::SystemTime::now() - PORT_RESERVATION - Duration::from_secs(5);
        std::fs::File::options().write(true).open(&file).expect("open").set_modified(old).expect("age it");
        assert!(reserve(&file).expect("expired"), "an expired reservation was not taken");
    }
}
