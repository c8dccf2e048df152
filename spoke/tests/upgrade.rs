//! Live upgrades of a running cluster on a real control plane whose KWOK pods run real
//! setup packages (each member's files live with its PVC in the test bed, so a recreated
//! member finds its persistent files): a 3-member cluster of `recorder-1` changes to
//! `recorder-2` (a director restart in the middle), members are recreated one at a time in
//! the app's `upgradeRoleOrder`, each runs `startscript --upgrade --from 1` once, and a file
//! written into a persistent directory before is still there; the cluster is rolled back to
//! `recorder-1` (`--rollback --from 2` in every member); an upgrade to `recorder-3`, whose
//! script fails on the second member, stops there in `upgrade error` with a clear message,
//! and a rollback brings the moved members back. The spoke's admission webhook refuses an
//! app change to an app that does not upgrade from the running one, naming the allowed apps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kdfed_crds::cluster::UpgradeStatus;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::{Testbed, certs};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

mod support;
use support::Director;

const TIMEOUT: Duration = Duration::from_secs(180);

/// A setup package whose `startscript` records every call (with its own version) under
/// /var/log/guestconfig; `--upgrade` and `--rollback` take a second; with `fail_upgrade`,
/// `--upgrade` fails (exit 4) in a member that has /etc/app-data/fail-upgrade.
fn startscript(version: &str, fail_upgrade: bool) -> String {
    let fail = if fail_upgrade {
        "if [ \"$1\" = \"--upgrade\" ] && [ -f /etc/app-data/fail-upgrade ]; then\n  echo \"migrating the data\"\n  echo \"schema migration 3 failed: table users is locked\" >&2\n  exit 4\nfi\n"
    } else {
        ""
    };
    format!(
        "#!/bin/sh\nlog=/var/log/guestconfig\nmkdir -p \"$log\"\necho \"v{version} $*\" >> \"$log/invocations\"\n\
         case \"$1\" in --upgrade|--rollback) sleep 1 ;; esac\n{fail}exit 0\n"
    )
}

fn build_package(dir: &Path, version: &str, fail_upgrade: bool) -> PathBuf {
    let src = dir.join(format!("recorder-{version}-setup"));
    std::fs::create_dir_all(src.join("recorder")).expect("package folder");
    std::fs::write(src.join("recorder/startscript"), startscript(version, fail_upgrade)).expect("startscript");
    let tgz = dir.join(format!("recorder-{version}.tgz"));
    let status = Command::new("tar").arg("czf").arg(&tgz).arg("-C").arg(&src).arg("recorder").status().expect("tar");
    assert!(status.success(), "tar failed");
    tgz
}

/// `recorder-<version>`: a controller (1) and workers (1+), both with storage, upgraded
/// workers first.
fn app(dir: &Path, version: &str, upgrade_from: &[&str], fail_upgrade: bool) -> KubeDirectorApp {
    let package = build_package(dir, version, fail_upgrade);
    serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": format!("recorder-{version}")},
        "spec": {
            "label": {"name": "Recorder"}, "distroID": "test/recorder", "version": version, "configSchemaVersion": 8,
            "defaultImageRepoTag": format!("example/recorder:{version}"),
            "defaultConfigPackage": {"packageURL": format!("file://{}", package.display())},
            "roles": [
                {"id": "controller", "cardinality": "1"},
                {"id": "worker", "cardinality": "1+"}
            ],
            "config": {"selectedRoles": ["controller", "worker"], "roleServices": []},
            "upgradeFrom": upgrade_from,
            "upgradeRoleOrder": ["worker", "controller"]
        }
    }))
    .expect("app")
}

fn other_distro_app() -> KubeDirectorApp {
    serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": "lookalike"},
        "spec": {
            "label": {"name": "Lookalike"}, "distroID": "test/other", "version": "9", "configSchemaVersion": 8,
            "defaultImageRepoTag": "example/other:9",
            "roles": [{"id": "controller", "cardinality": "1"}, {"id": "worker", "cardinality": "1+"}],
            "config": {"selectedRoles": ["controller", "worker"], "roleServices": []},
            "upgradeFrom": ["recorder-1"]
        }
    }))
    .expect("app")
}

fn cluster() -> KubeDirectorCluster {
    serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": "db"},
        "spec": {
            "app": "recorder-1",
            "roles": [
                {"id": "controller", "members": 1, "storage": {"size": "1Gi"}},
                {"id": "worker", "members": 2, "storage": {"size": "1Gi"}}
            ]
        }
    }))
    .expect("cluster")
}

struct Env {
    bed: Testbed,
    client: Client,
    director: Director,
    args: Vec<String>,
}

impl Env {
    async fn start() -> Env {
        let bed = Testbed::start(&["east"]).await.expect("test bed");
        let client = bed.client("east").await.expect("client");
        kdfed_common::crds::install(client.clone()).await.expect("CRDs");
        let c = bed.cluster("east");
        let files = certs::webhook_cert(&c.dir.join("pki"), "webhook").expect("webhook cert");
        let port = kdfed_testbed::free_port().expect("port");
        let args = certs::webhook_flags(port, &files, &format!("https://127.0.0.1:{port}"));
        let director = Director::start(&c.kubeconfig, &c.dir.join("director.log"), &args, 0);
        let env = Env { bed, client, director, args };
        env.wait_for_webhook().await;
        env
    }

    async fn wait_for_webhook(&self) {
        let hooks: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
            Api::all(self.client.clone());
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while hooks.get_opt("kdfed-spoke.kubedirector.hpe.com").await.expect("get").is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the spoke's webhook was not registered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn restart_director(&mut self) {
        self.director.kill();
        let c = self.bed.cluster("east");
        self.director = Director::start(&c.kubeconfig, &c.dir.join("director.log"), &self.args, 0);
    }

    fn clusters(&self) -> Api<KubeDirectorCluster> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn get(&self) -> KubeDirectorCluster {
        self.clusters().get("db").await.expect("get cluster")
    }

    async fn wait_for<F: FnMut(&KubeDirectorCluster) -> bool>(&self, what: &str, mut done: F) -> KubeDirectorCluster {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let c = self.get().await;
            if done(&c) {
                return c;
            }
            assert!(tokio::time::Instant::now() < deadline, "db: not {what} after {TIMEOUT:?}: {:#?}", c.status);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn set_app(&self, app: &str) -> Result<KubeDirectorCluster, kube::Error> {
        let patch = json!({"spec": {"app": app}});
        self.clusters().patch("db", &PatchParams::default(), &Patch::Merge(patch)).await
    }

    /// The folder of the member's files: they live with its claim.
    async fn member_fs(&self, pod: &str) -> PathBuf {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), "default");
        let claim = format!("p-{pod}");
        let uid = claims.get(&claim).await.expect("claim").uid().expect("uid");
        self.bed.cluster("east").claim_filesystem("default", &claim, &uid)
    }

    async fn invocations(&self, pod: &str) -> Vec<String> {
        let path = self.member_fs(pod).await.join("var/log/guestconfig/invocations");
        std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
    }

    async fn pod_uids(&self) -> BTreeMap<String, String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let lp = ListParams::default().labels("kubedirector.hpe.com/kdcluster=db");
        let list = pods.list(&lp).await.expect("pods").items;
        list.iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
            .collect()
    }

    async fn events(&self) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let lp = ListParams::default().fields("involvedObject.name=db");
        events.list(&lp).await.expect("events").items.into_iter().filter_map(|e| e.message).collect()
    }

    /// Waits for the rollout to reach `phase`, checking on the way that at most one member
    /// is `upgrading` and that pods are recreated one at a time; returns the cluster and the
    /// pods in the order they were recreated. `restart_after`: restart the director once
    /// that many members have moved.
    async fn follow(&mut self, phase: &str, restart_after: Option<usize>) -> (KubeDirectorCluster, Vec<String>) {
        let first = self.pod_uids().await;
        let mut seen = first.clone();
        let mut recreated: Vec<String> = Vec::new();
        let mut restarted = restart_after.is_none();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let c = self.get().await;
            let status = c.status.clone().unwrap_or_default();
            let upgrading: Vec<&str> = status
                .roles
                .iter()
                .flat_map(|r| &r.members)
                .filter(|m| m.state == "upgrading")
                .map(|m| m.pod.as_str())
                .collect();
            assert!(upgrading.len() <= 1, "more than one member upgrading: {upgrading:?}");
            for (pod, uid) in self.pod_uids().await {
                if seen.get(&pod).is_some_and(|old| *old != uid)
                    && first.get(&pod) != Some(&uid)
                    && !recreated.contains(&pod)
                {
                    recreated.push(pod.clone());
                }
                seen.insert(pod, uid);
            }
            let moved = status.upgrade.as_ref().map_or(0, |u| u.upgraded_members.len());
            assert!(recreated.len() <= moved + 1, "pods recreated ahead of the rollout: {recreated:?}, {moved} moved");
            if !restarted && moved >= restart_after.unwrap_or(0) {
                self.restart_director();
                restarted = true;
            }
            if status.upgrade.as_ref().is_some_and(|u| u.phase == phase) && status.state.as_deref() != Some("creating")
            {
                return (c, recreated);
            }
            assert!(tokio::time::Instant::now() < deadline, "rollout not {phase} after {TIMEOUT:?}: {:#?}", status);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

fn upgrade_of(c: &KubeDirectorCluster) -> UpgradeStatus {
    c.status.as_ref().and_then(|s| s.upgrade.clone()).expect("status.upgrade")
}

fn pods_of(c: &KubeDirectorCluster, role: &str) -> Vec<String> {
    let status = c.status.as_ref().expect("status");
    let mut pods: Vec<String> =
        status.roles.iter().filter(|r| r.id == role).flat_map(|r| &r.members).map(|m| m.pod.clone()).collect();
    pods.sort();
    pods
}

fn all_configured(c: &KubeDirectorCluster) -> bool {
    let Some(s) = &c.status else { return false };
    s.state.as_deref() == Some("configured") && s.roles.iter().flat_map(|r| &r.members).all(|m| m.state == "configured")
}

fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

#[tokio::test]
async fn a_running_cluster_is_upgraded_member_by_member_rolled_back_and_stopped_by_a_failing_script() {
    let mut env = Env::start().await;
    let apps: Api<KubeDirectorApp> = Api::namespaced(env.client.clone(), "default");
    let dir = env.bed.dir.clone();
    for a in [
        app(&dir, "1", &[], false),
        app(&dir, "2", &["recorder-1"], false),
        app(&dir, "3", &["recorder-1"], true),
        other_distro_app(),
    ] {
        apps.create(&PostParams::default(), &a).await.expect("create app");
    }
    env.clusters().create(&PostParams::default(), &cluster()).await.expect("create cluster");
    let c = env.wait_for("configured", all_configured).await;
    let (controller, workers) = (pods_of(&c, "controller"), pods_of(&c, "worker"));
    let members: Vec<String> = controller.iter().chain(&workers).cloned().collect();
    // Data each member keeps in a persistent directory (/etc).
    for pod in &members {
        kdfed_testbed::exec::write_pod_file(
            &env.client,
            "default",
            pod,
            "/etc/app-data/records",
            &format!("rows of {pod}\n"),
            0o644,
        )
        .await
        .expect("write data");
    }

    // Admission names the apps the cluster may change to; a lookalike of another distro is not one.
    let refused = env.set_app("lookalike").await.expect_err("refused");
    let message = refused.to_string();
    assert!(message.contains("spec.app"), "{message}");
    assert!(message.contains("Allowed: recorder-2, recorder-3."), "{message}");

    // v1 -> v2: workers (highest ordinal first), then the controller; the director restarts mid-way.
    env.set_app("recorder-2").await.expect("upgrade accepted");
    let (c, recreated) = env.follow("Completed", Some(1)).await;
    let expected: Vec<String> = workers.iter().rev().chain(&controller).cloned().collect();
    assert_eq!(recreated, expected, "recreated one at a time in role order");
    let u = upgrade_of(&c);
    assert_eq!((u.from.as_str(), u.to.as_str()), ("recorder-1", "recorder-2"));
    assert_eq!(u.upgraded_members, expected);
    let c = env.wait_for("configured on v2", all_configured).await;
    assert_eq!(c.status.as_ref().and_then(|s| s.members_ready.clone()).as_deref(), Some("3/3"));
    for pod in &members {
        let calls = env.invocations(pod).await;
        assert_eq!(count(&calls, "v1 --configure"), 1, "{pod}: {calls:?}");
        assert_eq!(count(&calls, "v2 --upgrade --from 1"), 1, "{pod} upgraded once, restart or not: {calls:?}");
        let kept = std::fs::read_to_string(env.member_fs(pod).await.join("etc/app-data/records")).expect("data kept");
        assert_eq!(kept, format!("rows of {pod}\n"));
    }
    let controller_calls = env.invocations(&controller[0]).await;
    assert!(
        controller_calls
            .iter()
            .any(|l| l.starts_with("v1 --upgraded --nodegroup 1 --role worker --fqdns ")
                && l.ends_with("--from 1 --to 2")),
        "the controller heard of the upgraded workers: {controller_calls:?}"
    );
    let events = env.events().await;
    for pod in &members {
        assert!(events.iter().any(|e| e.starts_with(&format!("member{{{pod}}} in role{{"))), "{pod}: {events:?}");
    }

    // Back to v1: every member rolls back, the controller first, data kept.
    env.set_app("recorder-1").await.expect("rollback accepted");
    let (c, recreated) = env.follow("RolledBack", None).await;
    let back: Vec<String> = controller.iter().chain(workers.iter().rev()).cloned().collect();
    assert_eq!(recreated, back);
    assert_eq!(upgrade_of(&c).upgraded_members, back);
    env.wait_for("configured on v1", all_configured).await;
    for pod in &members {
        let calls = env.invocations(pod).await;
        assert_eq!(count(&calls, "v1 --rollback --from 2"), 1, "{pod}: {calls:?}");
        assert!(env.member_fs(pod).await.join("etc/app-data/records").exists(), "{pod} lost its data");
    }

    // v1 -> v3, whose script fails on the second member: the rollout stops there.
    let second = workers[0].clone();
    kdfed_testbed::exec::write_pod_file(&env.client, "default", &second, "/etc/app-data/fail-upgrade", "yes\n", 0o644)
        .await
        .expect("marker");
    env.set_app("recorder-3").await.expect("upgrade accepted");
    let (c, _) = env.follow("Failed", None).await;
    let u = upgrade_of(&c);
    assert_eq!(u.failed_member.as_deref(), Some(second.as_str()));
    assert_eq!(u.upgraded_members, [workers[1].clone()]);
    let message = u.message.unwrap_or_default();
    assert!(message.contains(&format!("member{{{second}}}")), "{message}");
    assert!(message.contains("exit status {4}") && message.contains("schema migration 3 failed"), "{message}");
    let states: BTreeMap<String, String> = c
        .status
        .iter()
        .flat_map(|s| &s.roles)
        .flat_map(|r| &r.members)
        .map(|m| (m.pod.clone(), m.state.clone()))
        .collect();
    assert_eq!(states[&second], "upgrade error");
    assert_eq!(states[&controller[0]], "configured");
    assert_eq!(count(&env.invocations(&controller[0]).await, "v3 --upgrade --from 1"), 0, "nothing after it moved");
    let warned = env.events().await;
    assert!(warned.iter().any(|e| e.contains("failed; the rollout stopped there")), "{warned:?}");
    // Admission: only the way back now.
    let refused = env.set_app("recorder-2").await.expect_err("mid-way");
    assert!(refused.to_string().contains("Allowed: recorder-1."), "{refused}");

    // Rollback from the failure: the two moved members go back to v1.
    env.set_app("recorder-1").await.expect("rollback accepted");
    let (c, _) = env.follow("RolledBack", None).await;
    let mut moved = upgrade_of(&c).upgraded_members;
    moved.sort();
    let mut expected_back = vec![workers[0].clone(), workers[1].clone()];
    expected_back.sort();
    assert_eq!(moved, expected_back);
    env.wait_for("configured on v1 again", all_configured).await;
    for pod in &workers {
        assert_eq!(count(&env.invocations(pod).await, "v1 --rollback --from 3"), 1, "{pod}");
        assert!(env.member_fs(pod).await.join("etc/app-data/records").exists(), "{pod} lost its data");
    }
    assert_eq!(count(&env.invocations(&controller[0]).await, "v1 --rollback --from 3"), 0, "never moved");
}
