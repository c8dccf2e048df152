//! What the spoke's integration tests share: a `kdfed-spoke --standalone` process.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `kdfed-spoke --standalone` process on one test-bed cluster, killed on drop.
pub struct Director(Child);

impl Director {
    /// Starts the director on the cluster of `kubeconfig` with `extra` arguments and its
    /// admin server (`/metrics`) on `127.0.0.1:admin_port` (0: any free port); its output
    /// is appended to `log`.
    pub fn start(kubeconfig: &Path, log: &Path, extra: &[String], admin_port: u16) -> Director {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kdfed-spoke"))
            .args(["--standalone", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--admin-address", &format!("127.0.0.1:{admin_port}")])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start kdfed-spoke");
        Director(child)
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        self.kill();
    }
}
