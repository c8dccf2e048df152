//! Setup packages on a real control plane whose KWOK pods really run exec'd commands (each
//! pod's files live in its own folder of the test bed): the director writes configmeta,
//! installs a real setup package (a tgz built here, fetched from a `file://` URL), runs
//! `startscript --configure` once per member, tells the roles that ask about members coming
//! and going, waits for `--delnodes` before members go, reports a failing script in
//! `config error` and sets a replaced container up again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kdfed_crds::cluster::MemberStatus;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::Testbed;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(180);

/// A `kdfed-spoke --standalone` process, killed on drop.
struct Director(Child);

impl Drop for Director {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Env {
    bed: Testbed,
    client: Client,
    _director: Director,
    package: PathBuf,
}

/// The app's setup package: `startscript` records every invocation (and the configmeta it
/// saw at `--configure`) under /var/log/guestconfig; members of role `broken` fail to
/// configure with exit status 3; `--delnodes` takes two seconds.
const STARTSCRIPT: &str = r#"#!/bin/sh
log=/var/log/guestconfig
mkdir -p "$log"
if [ "$1" = "--configure" ]; then
  cp /etc/guestconfig/configmeta.json "$log/configmeta-at-configure.json"
  if grep -q '"role_id":"broken"' /etc/guestconfig/configmeta.json; then
    echo "configuring the broken member"
    echo "cannot configure a broken member" >&2
    exit 3
  fi
fi
if [ "$1" = "--delnodes" ]; then sleep 2; fi
echo "$*" >> "$log/invocations"
"#;

fn build_package(dir: &Path) -> PathBuf {
    let src = dir.join("recorder-setup");
    std::fs::create_dir_all(src.join("recorder")).expect("package folder");
    std::fs::write(src.join("recorder/startscript"), STARTSCRIPT).expect("startscript");
    let tgz = dir.join("recorder-setup.tgz");
    let status = Command::new("tar").arg("czf").arg(&tgz).arg("-C").arg(&src).arg("recorder").status().expect("tar");
    assert!(status.success(), "tar failed");
    tgz
}

async fn env() -> Env {
    let bed = Testbed::start(&["east"]).await.expect("test bed");
    let client = bed.client("east").await.expect("client");
    kdfed_common::crds::install(client.clone()).await.expect("CRDs");
    let c = bed.cluster("east");
    let log = std::fs::File::create(c.dir.join("director.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_kdfed-spoke"))
        .args(["--standalone", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .args(["--admin-address", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start kdfed-spoke");
    let package = build_package(&bed.dir);
    let app = recorder_app(&package);
    let apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "default");
    apps.create(&PostParams::default(), &serde_json::from_value(app).expect("app")).await.expect("create app");
    Env { bed, client, _director: Director(child), package }
}

fn recorder_app(package: &Path) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": "recorder"},
        "spec": {
            "label": {"name": "Recorder"}, "distroID": "test/recorder", "version": "1", "configSchemaVersion": 8,
            "defaultImageRepoTag": "example/recorder:1",
            "defaultConfigPackage": {"packageURL": format!("file://{}", package.display())},
            "services": [{"id": "ssh", "label": {"name": "SSH"}, "endpoint": {"port": 22}}],
            "roles": [
                {"id": "controller", "cardinality": "1", "eventList": ["addnodes", "delnodes"]},
                {"id": "worker", "cardinality": "1+", "eventList": []},
                {"id": "broken", "cardinality": "0+"}
            ],
            "config": {
                "selectedRoles": ["controller", "worker", "broken"],
                "roleServices": [{"roleID": "controller", "serviceIDs": ["ssh"]}, {"roleID": "worker", "serviceIDs": ["ssh"]}]
            }
        }
    })
}

fn recorder_cluster(name: &str, workers: i32, broken: i32) -> KubeDirectorCluster {
    serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": name},
        "spec": {
            "app": "recorder", "serviceType": "ClusterIP",
            "roles": [
                {"id": "controller", "members": 1, "resources": {"limits": {"cpu": "2", "memory": "2Gi"}}},
                {"id": "worker", "members": workers},
                {"id": "broken", "members": broken}
            ]
        }
    }))
    .expect("cluster")
}

impl Env {
    fn clusters(&self) -> Api<KubeDirectorCluster> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// The folder holding what the member's current container wrote.
    async fn member_fs(&self, pod: &str) -> PathBuf {
        let uid = self.pods().get(pod).await.expect("pod").uid().expect("uid");
        self.bed.cluster("east").pod_filesystem("default", pod, &uid)
    }

    /// Every `startscript` invocation the member's current container recorded.
    async fn invocations(&self, pod: &str) -> Vec<String> {
        let path = self.member_fs(pod).await.join("var/log/guestconfig/invocations");
        std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
    }

    async fn configmeta_at_configure(&self, pod: &str) -> Value {
        let path = self.member_fs(pod).await.join("var/log/guestconfig/configmeta-at-configure.json");
        serde_json::from_str(&std::fs::read_to_string(&path).expect("configmeta copy")).expect("configmeta json")
    }

    async fn wait_for<F>(&self, name: &str, what: &str, mut done: F) -> KubeDirectorCluster
    where
        F: FnMut(&KubeDirectorCluster) -> bool,
    {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(c) = self.clusters().get_opt(name).await.expect("get cluster")
                && done(&c)
            {
                return c;
            }
            if tokio::time::Instant::now() > deadline {
                let c = self.clusters().get_opt(name).await.expect("get");
                panic!("{name}: not {what} after {TIMEOUT:?}: {:#?}", c.map(|c| c.status));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn set_workers(&self, name: &str, workers: i32) {
        let mut c = self.clusters().get(name).await.expect("get");
        c.spec.roles[1].members = Some(workers);
        c.metadata.managed_fields = None;
        c.status = None;
        self.clusters().replace(name, &PostParams::default(), &c).await.expect("update spec");
    }
}

fn members_of(c: &KubeDirectorCluster, role: &str) -> Vec<MemberStatus> {
    c.status.as_ref().and_then(|s| s.roles.iter().find(|r| r.id == role)).map(|r| r.members.clone()).unwrap_or_default()
}

fn fqdns(members: &[MemberStatus]) -> Vec<String> {
    members.iter().map(|m| m.fqdn.clone().expect("fqdn")).collect()
}

/// Configured, with exactly these member counts, every member `configured` and nothing
/// left to deliver.
fn configured_with(c: &KubeDirectorCluster, counts: &[(&str, usize)]) -> bool {
    let Some(status) = &c.status else { return false };
    status.state.as_deref() == Some("configured")
        && counts
            .iter()
            .all(|(role, n)| status.roles.iter().find(|r| r.id == *role).map_or(0, |r| r.members.len()) == *n)
        && status
            .roles
            .iter()
            .flat_map(|r| &r.members)
            .all(|m| m.state == "configured" && m.state_detail.pending_notify_cmds.is_empty())
}

/// The FQDNs named by every recorded `--<event> --nodegroup 1 --role <role> --fqdns a,b`.
fn notified(invocations: &[String], event: &str, role: &str) -> BTreeSet<String> {
    let prefix = format!("--{event} --nodegroup 1 --role {role} --fqdns ");
    invocations
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .flat_map(|list| list.split(','))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn setup_packages_configure_members_and_hear_about_membership_changes() {
    let env = env().await;
    assert!(env.package.exists());
    env.clusters().create(&PostParams::default(), &recorder_cluster("rec", 2, 0)).await.expect("create cluster");

    // Built: every member ran --configure once, with a configmeta describing the whole cluster.
    let c = env.wait_for("rec", "configured", |c| configured_with(c, &[("controller", 1), ("worker", 2)])).await;
    let controller = members_of(&c, "controller");
    let workers = members_of(&c, "worker");
    for m in controller.iter().chain(&workers) {
        assert_eq!(env.invocations(&m.pod).await, vec!["--configure"], "{}", m.pod);
        let meta = env.configmeta_at_configure(&m.pod).await;
        let roles = &meta["nodegroups"]["1"]["roles"];
        assert_eq!(roles["controller"]["fqdns"], json!(fqdns(&controller)), "{}", m.pod);
        assert_eq!(roles["worker"]["fqdns"], json!(fqdns(&workers)), "{}", m.pod);
        assert_eq!(roles["controller"]["flavor"]["cores"], "2");
        assert_eq!(roles["controller"]["flavor"]["memory"], "2048");
        assert_eq!(meta["node"]["fqdn"], json!(m.fqdn), "{}", m.pod);
        assert_eq!(meta["node"]["id"], json!(m.node_id.to_string()));
        let role = if controller.iter().any(|x| x.pod == m.pod) { "controller" } else { "worker" };
        assert_eq!(meta["node"]["role_id"], role);
        assert_eq!(meta["distros"]["test/recorder"]["1"]["bdvlibrefkey"], json!(["nodegroups", "1"]));
        assert_eq!(meta["cluster"]["name"], "rec");
    }
    let fresh =
        std::fs::read_to_string(env.member_fs(&controller[0].pod).await.join("etc/guestconfig/configmeta.json"))
            .expect("configmeta in the member");
    assert!(fresh.contains("\"role_id\":\"controller\""));

    // Expanded by two: the controller (which asked) hears about exactly the two new members,
    // the workers (which did not ask) hear nothing, and the new members are configured.
    env.set_workers("rec", 4).await;
    let c = env.wait_for("rec", "expanded", |c| configured_with(c, &[("controller", 1), ("worker", 4)])).await;
    let all_workers = members_of(&c, "worker");
    let new: BTreeSet<String> = all_workers[2..].iter().map(|m| m.fqdn.clone().expect("fqdn")).collect();
    let heard = env.invocations(&controller[0].pod).await;
    assert_eq!(heard[0], "--configure");
    assert_eq!(notified(&heard, "addnodes", "worker"), new, "{heard:?}");
    assert!(heard[1..].iter().all(|l| l.starts_with("--addnodes --nodegroup 1 --role worker --fqdns ")), "{heard:?}");
    for m in &all_workers {
        assert_eq!(env.invocations(&m.pod).await, vec!["--configure"], "{}", m.pod);
    }
    let meta = env.configmeta_at_configure(&all_workers[3].pod).await;
    assert_eq!(meta["nodegroups"]["1"]["roles"]["worker"]["fqdns"].as_array().map(Vec::len), Some(4));
    let refreshed =
        std::fs::read_to_string(env.member_fs(&controller[0].pod).await.join("etc/guestconfig/configmeta.json"))
            .expect("configmeta");
    let refreshed: Value = serde_json::from_str(&refreshed).expect("json");
    assert_eq!(
        refreshed["nodegroups"]["1"]["roles"]["worker"]["fqdns"],
        json!(fqdns(&all_workers)),
        "configmeta refreshed"
    );

    // Shrunk by two: the leaving members' pods stay until the controller has heard
    // --delnodes about them (its script takes two seconds), then they go.
    let leaving: Vec<String> = all_workers[2..].iter().map(|m| m.pod.clone()).collect();
    env.set_workers("rec", 2).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let heard = env.invocations(&controller[0].pod).await;
        if heard.iter().any(|l| l.starts_with("--delnodes")) {
            break;
        }
        for pod in &leaving {
            let live = env.pods().get_opt(pod).await.expect("get pod");
            assert!(
                live.is_some_and(|p| p.metadata.deletion_timestamp.is_none()),
                "{pod} went before the controller heard --delnodes"
            );
        }
        assert!(tokio::time::Instant::now() < deadline, "no --delnodes delivered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = env.wait_for("rec", "shrunk", |c| configured_with(c, &[("controller", 1), ("worker", 2)])).await;
    let heard = env.invocations(&controller[0].pod).await;
    assert_eq!(notified(&heard, "delnodes", "worker"), new, "{heard:?}");
    for pod in &leaving {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while env.pods().get_opt(pod).await.expect("get").is_some() {
            assert!(tokio::time::Instant::now() < deadline, "{pod} still there");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for m in members_of(&c, "worker") {
        assert_eq!(env.invocations(&m.pod).await, vec!["--configure"], "workers asked for no events");
    }

    // A replaced container (no persistent storage) is set up again from scratch.
    let worker = members_of(&c, "worker")[0].clone();
    let old_container = worker.state_detail.last_configured_container.clone().expect("container");
    env.pods().delete(&worker.pod, &DeleteParams::default().grace_period(0)).await.expect("delete pod");
    let c = env
        .wait_for("rec", "set up again", |c| {
            configured_with(c, &[("controller", 1), ("worker", 2)])
                && members_of(c, "worker")[0].state_detail.last_configured_container.as_ref() != Some(&old_container)
        })
        .await;
    assert_eq!(members_of(&c, "worker")[0].pod, worker.pod);
    assert_eq!(env.invocations(&worker.pod).await, vec!["--configure"], "the new container ran --configure");
    let heard_after = env.invocations(&controller[0].pod).await;
    assert!(
        !heard_after.iter().any(|l| l.starts_with("--addnodes") && l.contains(&worker.fqdn.clone().expect("fqdn"))),
        "a restart is not news"
    );
}

#[tokio::test]
async fn a_failing_setup_script_leaves_its_member_in_config_error() {
    let env = env().await;
    env.clusters().create(&PostParams::default(), &recorder_cluster("flaky", 1, 1)).await.expect("create cluster");
    let c = env
        .wait_for("flaky", "settled", |c| {
            let members: Vec<MemberStatus> =
                ["controller", "worker", "broken"].iter().flat_map(|r| members_of(c, r)).collect();
            members.len() == 3 && members.iter().all(|m| m.state == "configured" || m.state == "config error")
        })
        .await;
    assert_eq!(members_of(&c, "controller")[0].state, "configured");
    assert_eq!(members_of(&c, "worker")[0].state, "configured");
    let broken = members_of(&c, "broken")[0].clone();
    assert_eq!(broken.state, "config error");
    let detail = broken.state_detail.config_error_detail.clone().expect("detail");
    assert!(detail.contains("configure failed with exit status {3}"), "{detail}");
    assert!(detail.contains("cannot configure a broken member"), "stderr tail: {detail}");
    assert!(detail.contains("configuring the broken member"), "stdout tail: {detail}");
    let status = c.status.clone().expect("status");
    assert!(status.member_state_rollup.is_some_and(|r| r.config_errors));
}
