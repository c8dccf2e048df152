//! The deploy manifests (kustomize) are accepted by a real API server (server-side apply).

use std::path::Path;
use std::process::Command;

use kdfed_testbed::Testbed;

fn kubectl() -> String {
    let env = kdfed_testbed::binaries::cache_dir().join("bin").join("env");
    std::fs::read_to_string(env)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("KDFED_KUBECTL=").map(str::to_string))
        .expect("kubectl from tests/testbed/install.sh")
}

#[tokio::test]
async fn hub_and_spoke_manifests_apply_to_a_real_api_server() {
    let bed = Testbed::start(&["hub", "east"]).await.expect("test bed");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (cluster, base) in [("hub", "deploy/hub"), ("east", "deploy/spoke")] {
        let out = Command::new(kubectl())
            .arg(format!("--kubeconfig={}", bed.cluster(cluster).kubeconfig.display()))
            .args(["apply", "--server-side", "--field-manager=kdfed-test", "-k"])
            .arg(root.join(base))
            .output()
            .expect("kubectl");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{base}: {text}");
        for expected in [
            "customresourcedefinition.apiextensions.k8s.io/kubedirectorclusters.kubedirector.hpe.com",
            "clusterrole.rbac.authorization.k8s.io/kdfed-",
            "deployment.apps/kdfed-",
        ] {
            assert!(text.contains(expected), "{base}: {expected} not applied:\n{text}");
        }
    }
}
