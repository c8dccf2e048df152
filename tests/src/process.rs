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
        Ok(Process { name: name.to_string(), pid, child: Some(child) })
    }

    /// A process known only by pid (from a `testbed up` state file).
    pub fn adopt(name: &str, pid: i32) -> Process {
        Process { name: name.to_string(), pid, child: None }
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

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
