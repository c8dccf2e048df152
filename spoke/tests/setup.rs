//! Setup packages on a real control plane whose KWOK pods really run exec'd commands (each
//! pod's files live in its own folder of the test bed): the director writes configmeta,
//! installs a real setup package (a tgz built here, fetched from a `file://` URL), runs
//! `startscript --configure` once per member, tells the roles that ask about members coming
//! and going, waits for `--delnodes` before members go, reports a failing script in
//! `config error` and sets a replaced container up again; connected objects reach members
//! through `--reconnect`, endpoints with `hasAuthToken` get stable tokens, setup waits for
//! systemd where the app needs it, and a package that cannot be fetched is a config error.
//! With a configcli package given to the spoke, members of roles with a setup package get
//! configcli (and `bdvcli`) installed once before their package runs; a broken configcli
//! package is a config error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Service};
use kdfed_crds::cluster::MemberStatus;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::Testbed;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(180);

mod support;
use support::Director;

struct Env {
    bed: Testbed,
    client: Client,
    director: Director,
    package: PathBuf,
    /// Extra arguments of the spoke (kept across restarts).
    spoke_args: Vec<String>,
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
if [ "$1" = "--reconnect" ]; then cp /etc/guestconfig/configmeta.json "$log/configmeta-at-reconnect.json"; fi
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

fn start_director(bed: &Testbed, extra: &[String]) -> Director {
    let c = bed.cluster("east");
    Director::start(&c.kubeconfig, &c.dir.join("director.log"), extra, 0)
}

async fn env() -> Env {
    env_with(|_| Vec::new()).await
}

/// A test bed and a standalone spoke started with the arguments `spoke_args` returns (given
/// the test bed's folder, to put files in).
async fn env_with(spoke_args: impl FnOnce(&Path) -> Vec<String>) -> Env {
    let bed = Testbed::start(&["east"]).await.expect("test bed");
    let client = bed.client("east").await.expect("client");
    kdfed_common::crds::install(client.clone()).await.expect("CRDs");
    let spoke_args = spoke_args(&bed.dir);
    let director = start_director(&bed, &spoke_args);
    let package = build_package(&bed.dir);
    let app = recorder_app(&package);
    let apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "default");
    apps.create(&PostParams::default(), &serde_json::from_value(app).expect("app")).await.expect("create app");
    Env { bed, client, director, package, spoke_args }
}

fn recorder_app(package: &Path) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": "recorder"},
        "spec": {
            "label": {"name": "Recorder"}, "distroID": "test/recorder", "version": "1", "configSchemaVersion": 8,
            "defaultImageRepoTag": "example/recorder:1",
            "defaultConfigPackage": {"packageURL": format!("file://{}", package.display())},
            "services": [
                {"id": "ssh", "label": {"name": "SSH"}, "endpoint": {"port": 22}},
                {"id": "ui", "label": {"name": "UI"}, "endpoint": {"port": 8888, "urlScheme": "http", "hasAuthToken": true}}
            ],
            "roles": [
                {"id": "controller", "cardinality": "1", "eventList": ["configure", "addnodes", "delnodes"]},
                {"id": "worker", "cardinality": "1+", "eventList": ["configure"]},
                {"id": "broken", "cardinality": "0+"}
            ],
            "config": {
                "selectedRoles": ["controller", "worker", "broken"],
                "roleServices": [
                    {"roleID": "controller", "serviceIDs": ["ssh", "ui"]},
                    {"roleID": "worker", "serviceIDs": ["ssh"]}
                ]
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

    /// A file in the member's current container, if it is there.
    async fn member_file(&self, pod: &str, path: &str) -> Option<String> {
        std::fs::read_to_string(self.member_fs(pod).await.join(path)).ok()
    }

    /// Gives the member's container a `systemctl` that answers (exit 0).
    async fn give_systemd(&self, pod: &str) {
        let script = "#!/bin/sh\necho 'systemd-journald.service - Journal Service'\nexit 0\n";
        kdfed_testbed::exec::write_pod_file(&self.client, "default", pod, "/usr/bin/systemctl", script, 0o755)
            .await
            .expect("systemctl");
    }

    /// Messages of the Events recorded about the cluster `name`.
    async fn events(&self, name: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
        events.list(&lp).await.expect("events").items.into_iter().filter_map(|e| e.message).collect()
    }

    /// The Events about `name` once every message in `expected` is among them (the director
    /// records an Event right after the status it reports, so a test that saw the status
    /// may be a moment early).
    async fn events_with(&self, name: &str, expected: &[String]) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let events = self.events(name).await;
            if expected.iter().all(|e| events.contains(e)) {
                return events;
            }
            assert!(tokio::time::Instant::now() < deadline, "missing Events {expected:?} among {events:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the director and starts a new one (its memory is the clusters' status only).
    fn restart_director(&mut self) {
        self.director.kill();
        self.director = start_director(&self.bed, &self.spoke_args);
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

fn annotation(c: &KubeDirectorCluster, key: &str) -> Option<i64> {
    c.annotations().get(key).and_then(|v| v.parse().ok())
}

fn reconnects(invocations: &[String]) -> usize {
    invocations.iter().filter(|l| l.as_str() == "--reconnect").count()
}

#[tokio::test]
async fn connected_objects_reach_members_through_reconnect_and_tokens_stay() {
    let mut env = env().await;
    let configmaps: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let settings = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "labels": {"kubedirector.hpe.com/cmType": "settings"}},
        "data": {"mode": "a"}
    });
    configmaps.create(&PostParams::default(), &serde_json::from_value(settings).expect("cm")).await.expect("create cm");
    let mut main = recorder_cluster("main", 1, 0);
    main.spec.connections =
        Some(serde_json::from_value(json!({"clusters": ["dep"], "configmaps": ["settings"]})).expect("connections"));
    env.clusters().create(&PostParams::default(), &main).await.expect("create main");
    env.clusters().create(&PostParams::default(), &recorder_cluster("dep", 1, 0)).await.expect("create dep");

    // The connected cluster becoming configured bumps connUpdateCounter on the one that
    // connects to it; configmeta shows the connected ConfigMap and cluster.
    let shape = [("controller", 1), ("worker", 1)];
    let dep = env.wait_for("dep", "configured", |c| configured_with(c, &shape)).await;
    let c = env
        .wait_for("main", "configured and told about dep", |c| {
            configured_with(c, &shape) && annotation(c, "kubedirector.hpe.com/connUpdateCounter").is_some()
        })
        .await;
    env.events_with("dep", &["connected to cluster {main}; updating it".to_string()]).await;
    env.events_with("main", &["connected cluster {dep} has changed".to_string()]).await;
    let members: Vec<MemberStatus> = ["controller", "worker"].iter().flat_map(|r| members_of(&c, r)).collect();
    for m in &members {
        let meta: Value = serde_json::from_str(
            &env.member_file(&m.pod, "etc/guestconfig/configmeta.json").await.expect("configmeta"),
        )
        .expect("json");
        assert_eq!(meta["connections"]["configmaps"]["settings"][0]["data"]["mode"], "a", "{}", m.pod);
        assert_eq!(meta["connections"]["clusters"]["dep"]["cluster"]["name"], "dep", "{}", m.pod);
    }

    // hasAuthToken: the controller (role with the `ui` endpoint) has a token in its status,
    // on its Service and in configmeta; the worker has none.
    let controller = members_of(&c, "controller")[0].clone();
    let token = controller.auth_token.clone().expect("token");
    assert!(token.len() == 32 && token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    assert_eq!(members_of(&c, "worker")[0].auth_token, None);
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let service_token = |svc: Service| svc.annotations().get("kubedirector.hpe.com/kd-auth-token").cloned();
    let svc = services.get(&format!("s-{}", controller.pod)).await.expect("member service");
    assert_eq!(service_token(svc), Some(token.clone()));
    let meta: Value = serde_json::from_str(
        &env.member_file(&controller.pod, "etc/guestconfig/configmeta.json").await.expect("configmeta"),
    )
    .expect("json");
    assert_eq!(meta["nodegroups"]["1"]["roles"]["controller"]["services"]["ui"]["authToken"], json!(token));

    // A new director process; then the ConfigMap changes: every member of `main` (both roles
    // have a setup package) runs --reconnect with configmeta showing the new data; `dep`
    // connects to nothing and hears nothing.
    let counter = annotation(&c, "kubedirector.hpe.com/hashChangeCounter").expect("hashChangeCounter");
    let hash = c.status.as_ref().and_then(|s| s.last_connection_hash.clone()).expect("lastConnectionHash");
    let mut before = BTreeMap::new();
    for m in &members {
        before.insert(m.pod.clone(), reconnects(&env.invocations(&m.pod).await));
    }
    env.restart_director();
    let patch = json!({"data": {"mode": "b"}});
    configmaps.patch("settings", &PatchParams::default(), &Patch::Merge(patch)).await.expect("change cm");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    for m in &members {
        loop {
            let heard = reconnects(&env.invocations(&m.pod).await) > before[&m.pod];
            let seen = env
                .member_file(&m.pod, "var/log/guestconfig/configmeta-at-reconnect.json")
                .await
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|meta| meta["connections"]["configmaps"]["settings"][0]["data"]["mode"] == "b");
            if heard && seen {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{}: no --reconnect with the new data", m.pod);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // --reconnect runs during the pass whose status records the new hash: wait for it.
    let c = env
        .wait_for("main", "configured again with the new hash", |c| {
            configured_with(c, &shape) && c.status.as_ref().and_then(|s| s.last_connection_hash.as_ref()) != Some(&hash)
        })
        .await;
    assert!(annotation(&c, "kubedirector.hpe.com/hashChangeCounter").expect("counter") > counter);
    for m in ["controller", "worker"].iter().flat_map(|r| members_of(&c, r)) {
        let version = m.state_detail.last_connection_version.expect("lastConnectionVersion");
        assert_eq!(Some(version), annotation(&c, "kubedirector.hpe.com/hashChangeCounter"), "{}", m.pod);
    }
    assert_eq!(members_of(&c, "controller")[0].auth_token, Some(token.clone()), "the token survives");
    let svc = services.get(&format!("s-{}", controller.pod)).await.expect("member service");
    assert_eq!(service_token(svc), Some(token));
    for m in ["controller", "worker"].iter().flat_map(|r| members_of(&dep, r)) {
        assert_eq!(reconnects(&env.invocations(&m.pod).await), 0, "{} connects to nothing", m.pod);
    }
}

#[tokio::test]
async fn setup_waits_for_systemd_per_member_and_a_missing_package_is_a_config_error() {
    let env = env().await;
    let mut app = recorder_app(&env.package);
    app["metadata"]["name"] = json!("needs-systemd");
    app["spec"]["systemdRequired"] = json!(true);
    app["spec"]["roles"][2]["configPackage"] = json!({"packageURL": "file:///nonexistent/kdfed-missing.tgz"});
    let apps: Api<KubeDirectorApp> = Api::namespaced(env.client.clone(), "default");
    apps.create(&PostParams::default(), &serde_json::from_value(app).expect("app")).await.expect("create app");
    let mut cluster = recorder_cluster("sd", 1, 1);
    cluster.spec.app = "needs-systemd".into();
    env.clusters().create(&PostParams::default(), &cluster).await.expect("create cluster");

    // The test bed's containers have no running systemd (the host's systemctl fails there):
    // every member waits in `creating`, nothing of the app's setup has run.
    let roles = ["controller", "worker", "broken"];
    let waiting = |c: &KubeDirectorCluster, role: &str| {
        members_of(c, role).iter().all(|m| {
            m.state == "creating"
                && m.state_detail.setup_detail.as_deref()
                    == Some(format!("systemd not yet responsive in member{{{}}}", m.pod).as_str())
        }) && !members_of(c, role).is_empty()
    };
    let c = env.wait_for("sd", "waiting for systemd", |c| roles.iter().all(|r| waiting(c, r))).await;
    let pod = |role: &str| members_of(&c, role)[0].pod.clone();
    for role in roles {
        assert!(env.invocations(&pod(role)).await.is_empty(), "{role}: nothing ran");
        assert!(env.member_file(&pod(role), "etc/guestconfig/configmeta.json").await.is_none(), "{role}");
    }
    let message = format!("systemd not yet responsive in member{{{}}}", pod("controller"));
    let events = env.events_with("sd", std::slice::from_ref(&message)).await;
    assert_eq!(events.iter().filter(|m| **m == message).count(), 1, "one Event, not one per pass");

    // systemd answers in the controller only: it goes on, the others keep waiting.
    env.give_systemd(&pod("controller")).await;
    let c = env
        .wait_for("sd", "controller configured", |c| {
            members_of(c, "controller").iter().all(|m| m.state == "configured")
        })
        .await;
    assert!(waiting(&c, "worker") && waiting(&c, "broken"), "{:#?}", c.status);
    assert!(members_of(&c, "controller")[0].state_detail.setup_detail.is_none());
    assert_eq!(env.invocations(&pod("controller")).await, vec!["--configure"]);

    // Then in the others: the worker is configured; the broken role's package cannot be
    // fetched, which is a config error naming the URL and the fetch error.
    env.give_systemd(&pod("worker")).await;
    env.give_systemd(&pod("broken")).await;
    let c = env
        .wait_for("sd", "settled", |c| {
            members_of(c, "worker").iter().all(|m| m.state == "configured")
                && members_of(c, "broken").iter().all(|m| m.state == "config error")
        })
        .await;
    let broken = members_of(&c, "broken")[0].clone();
    let detail = broken.state_detail.config_error_detail.clone().expect("detail");
    assert!(
        detail.starts_with(
            "execution of app config failed: cannot install setup package file:///nonexistent/kdfed-missing.tgz: "
        ),
        "{detail}"
    );
    assert!(detail.contains("kdfed-missing.tgz"), "{detail}");
    assert!(broken.state_detail.setup_detail.is_none());
    assert!(env.invocations(&broken.pod).await.is_empty());
    let expected = format!("failed to run initial config for member{{{}}} in role{{broken}}", broken.pod);
    env.events_with("sd", std::slice::from_ref(&expected)).await;
}

/// Packs `files` (path in the archive, content, mode) into the tgz `dir/name`.
fn build_tgz(dir: &Path, name: &str, files: &[(&str, &[u8], u32)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let src = dir.join(format!("{name}.src"));
    let mut tops = BTreeSet::new();
    for (path, content, mode) in files {
        let file = src.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("folder");
        std::fs::write(&file, content).expect("file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        tops.insert(path.split('/').next().expect("top folder").to_string());
    }
    let tgz = dir.join(name);
    let status = Command::new("tar").arg("czf").arg(&tgz).arg("-C").arg(&src).args(&tops).status().expect("tar");
    assert!(status.success(), "tar failed");
    tgz
}

/// Stands in for configcli's installer: records each run, checks its payload arrived whole,
/// and installs a `/usr/bin/configcli` that answers with the name it was called by, its
/// arguments and the member's role from configmeta.
const CONFIGCLI_INSTALL: &str = r#"#!/bin/sh
set -e
here="$(dirname "$0")"
mkdir -p /var/log/guestconfig
[ "$(wc -c < "$here/payload.bin")" -eq 65536 ]
echo "$(basename "$here")" >> /var/log/guestconfig/configcli-installs
cat > /usr/bin/configcli <<'SCRIPT'
#!/bin/sh
role=$(grep -o '"role_id":"[^"]*"' /etc/guestconfig/configmeta.json | head -n 1 | cut -d '"' -f 4)
echo "configcli 9.9 as $(basename "$0"): $* -> $role"
SCRIPT
chmod 755 /usr/bin/configcli
"#;

/// A configcli-like package of about 64 KiB (incompressible, so that it reaches members
/// in several exec chunks).
fn build_configcli(dir: &Path) -> PathBuf {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let payload: Vec<u8> = (0..65_536)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    build_tgz(
        dir,
        "configcli-9.9.tgz",
        &[
            ("configcli-9.9/install", CONFIGCLI_INSTALL.as_bytes(), 0o755),
            ("configcli-9.9/payload.bin", &payload, 0o644),
        ],
    )
}

/// A setup package whose `--configure` calls configcli under its three names and keeps
/// what they answered.
const CLI_STARTSCRIPT: &str = r#"#!/bin/sh
log=/var/log/guestconfig
mkdir -p "$log"
echo "$*" >> "$log/invocations"
if [ "$1" = "--configure" ]; then
  bdvcli --get node.role_id > "$log/bdvcli.out" 2>&1 || exit 4
  bd_vcli --get node.role_id > "$log/bd_vcli.out" 2>&1 || exit 5
  configcli --get node.role_id > "$log/configcli.out" 2>&1 || exit 6
fi
"#;

/// Staging folders node prep left in /tmp for `pod` (the test bed's /tmp is the host's).
fn staging_left(pod: &str) -> Vec<String> {
    let prefix = format!("kdfed-configcli.{pod}.");
    std::fs::read_dir("/tmp")
        .expect("/tmp")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// How many times `--configure` ran (the roles hear about each other too).
fn configures(invocations: &[String]) -> usize {
    invocations.iter().filter(|l| l.as_str() == "--configure").count()
}

impl Env {
    /// Lines of a file in the member's current container (none if it is not there).
    async fn member_lines(&self, pod: &str, path: &str) -> Vec<String> {
        self.member_file(pod, path).await.unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// Waits until the pod `pod` runs a container other than the one in the pod `old_uid`.
    async fn wait_for_new_pod(&self, pod: &str, old_uid: &str) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let live = self.pods().get_opt(pod).await.expect("get pod");
            if live.is_some_and(|p| p.uid().as_deref() != Some(old_uid)) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{pod} not recreated");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn members_get_configcli_once_and_setup_scripts_call_bdvcli() {
    let env = env_with(|dir| vec!["--configcli-package".into(), build_configcli(dir).display().to_string()]).await;
    let setup = build_tgz(&env.bed.dir, "cli-setup.tgz", &[("cli/startscript", CLI_STARTSCRIPT.as_bytes(), 0o755)]);
    // systemd gates the setup, so that the test can put a configcli into one member first.
    let app = json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": "cli"},
        "spec": {
            "label": {"name": "CLI"}, "distroID": "test/cli", "version": "1", "configSchemaVersion": 8,
            "defaultImageRepoTag": "example/cli:1", "systemdRequired": true,
            "defaultConfigPackage": {"packageURL": format!("file://{}", setup.display())},
            "services": [{"id": "ssh", "label": {"name": "SSH"}, "endpoint": {"port": 22}}],
            "roles": [
                {"id": "controller", "cardinality": "1"},
                {"id": "worker", "cardinality": "1+"},
                {"id": "plain", "cardinality": "0+", "configPackage": null}
            ],
            "config": {
                "selectedRoles": ["controller", "worker", "plain"],
                "roleServices": [{"roleID": "controller", "serviceIDs": ["ssh"]}]
            }
        }
    });
    let apps: Api<KubeDirectorApp> = Api::namespaced(env.client.clone(), "default");
    apps.create(&PostParams::default(), &serde_json::from_value(app).expect("app")).await.expect("create app");
    let cluster = json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": "cli"},
        "spec": {"app": "cli", "roles": [
            {"id": "controller", "members": 1}, {"id": "worker", "members": 2}, {"id": "plain", "members": 1}
        ]}
    });
    let cluster: KubeDirectorCluster = serde_json::from_value(cluster).expect("cluster");
    env.clusters().create(&PostParams::default(), &cluster).await.expect("create cluster");

    let waiting = |c: &KubeDirectorCluster| {
        ["controller", "worker"].iter().flat_map(|r| members_of(c, r)).filter(|m| m.state == "creating").count() == 3
            && members_of(c, "plain").len() == 1
    };
    let c = env.wait_for("cli", "waiting for systemd", waiting).await;
    let controller = members_of(&c, "controller")[0].pod.clone();
    let workers: Vec<String> = members_of(&c, "worker").iter().map(|m| m.pod.clone()).collect();
    let plain = members_of(&c, "plain")[0].pod.clone();

    // The second worker already has a configcli (as a member whose /usr is on a volume would).
    // It is where newer configcli packages put it, /usr/local/bin: the director adds
    // upstream's legacy links in /usr/bin instead of installing.
    let preinstalled = "#!/bin/sh\necho \"preinstalled configcli as $(basename \"$0\")\"\n";
    let path = "/usr/local/bin/configcli";
    kdfed_testbed::exec::write_pod_file(&env.client, "default", &workers[1], path, preinstalled, 0o755)
        .await
        .expect("configcli");
    for pod in [&controller, &workers[0], &workers[1]] {
        env.give_systemd(pod).await;
    }
    let shape = [("controller", 1), ("worker", 2), ("plain", 1)];
    let c = env.wait_for("cli", "configured", |c| configured_with(c, &shape)).await;

    // Installed once where it was missing; setup scripts reach it under all three names.
    for (pod, role) in [(&controller, "controller"), (&workers[0], "worker")] {
        let installs = env.member_lines(pod, "var/log/guestconfig/configcli-installs").await;
        assert_eq!(installs, vec!["configcli-9.9"], "{pod}");
        for name in ["bdvcli", "bd_vcli", "configcli"] {
            let out = env.member_file(pod, &format!("var/log/guestconfig/{name}.out")).await;
            assert_eq!(
                out.as_deref(),
                Some(format!("configcli 9.9 as {name}: --get node.role_id -> {role}\n").as_str())
            );
        }
        assert_eq!(configures(&env.invocations(pod).await), 1, "{pod}");
        assert_eq!(staging_left(pod), Vec::<String>::new(), "{pod}: staging folder removed");
    }
    // Never installed over an existing one.
    let preinstalled = &workers[1];
    assert!(env.member_lines(preinstalled, "var/log/guestconfig/configcli-installs").await.is_empty());
    let out = env.member_file(preinstalled, "var/log/guestconfig/bdvcli.out").await;
    assert_eq!(out.as_deref(), Some("preinstalled configcli as bdvcli\n"));
    for name in ["bdvcli", "bd_vcli", "configcli"] {
        let link = env.member_fs(preinstalled).await.join("usr/bin").join(name);
        let target = std::fs::read_link(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
        assert_eq!(target, std::path::Path::new("/usr/local/bin/configcli"), "{name}");
    }
    assert_eq!(configures(&env.invocations(preinstalled).await), 1);
    // A role without a setup package gets no configcli (as upstream).
    assert!(env.member_file(&plain, "usr/bin/configcli").await.is_none());
    assert_eq!(members_of(&c, "plain")[0].state, "configured");

    // A replaced container starts without configcli: it is installed again, once.
    let old_uid = env.pods().get(&controller).await.expect("pod").uid().expect("uid");
    let old_container = members_of(&c, "controller")[0].state_detail.last_configured_container.clone();
    env.pods().delete(&controller, &DeleteParams::default().grace_period(0)).await.expect("delete pod");
    env.wait_for_new_pod(&controller, &old_uid).await;
    env.give_systemd(&controller).await;
    env.wait_for("cli", "set up again", |c| {
        configured_with(c, &shape)
            && members_of(c, "controller")[0].state_detail.last_configured_container != old_container
    })
    .await;
    assert_eq!(env.member_lines(&controller, "var/log/guestconfig/configcli-installs").await, vec!["configcli-9.9"]);
    let out = env.member_file(&controller, "var/log/guestconfig/bdvcli.out").await;
    assert_eq!(out.as_deref(), Some("configcli 9.9 as bdvcli: --get node.role_id -> controller\n"));
}

#[tokio::test]
async fn a_broken_configcli_package_leaves_members_in_config_error() {
    let install = "#!/bin/sh\necho 'installing configcli 0.1'\necho 'configcli-0.1: python is missing' >&2\nexit 1\n";
    let env = env_with(|dir| {
        let tgz = build_tgz(dir, "configcli-0.1.tgz", &[("configcli-0.1/install", install.as_bytes(), 0o755)]);
        vec!["--configcli-package".into(), tgz.display().to_string()]
    })
    .await;
    env.clusters().create(&PostParams::default(), &recorder_cluster("nocli", 1, 0)).await.expect("create cluster");
    let c = env
        .wait_for("nocli", "in config error", |c| {
            let members: Vec<MemberStatus> = ["controller", "worker"].iter().flat_map(|r| members_of(c, r)).collect();
            members.len() == 2 && members.iter().all(|m| m.state == "config error")
        })
        .await;
    let expected: Vec<String> = ["controller", "worker"]
        .iter()
        .map(|r| format!("failed to run initial config for member{{{}}} in role{{{r}}}", members_of(&c, r)[0].pod))
        .collect();
    let events = env.events_with("nocli", &expected).await;
    for (role, m) in ["controller", "worker"].iter().map(|r| (r, members_of(&c, r)[0].clone())) {
        let detail = m.state_detail.config_error_detail.clone().expect("detail");
        assert!(detail.starts_with("failed to install configcli: "), "{detail}");
        assert!(detail.contains("configcli-0.1: python is missing"), "stderr tail: {detail}");
        let expected = format!("failed to run initial config for member{{{}}} in role{{{role}}}", m.pod);
        assert!(events.contains(&expected), "{events:?}");
        // Nothing of the app's setup ran; configmeta was written first (as upstream).
        assert!(env.invocations(&m.pod).await.is_empty(), "{}", m.pod);
        assert!(env.member_file(&m.pod, "opt/guestconfig/recorder/startscript").await.is_none(), "{}", m.pod);
        assert!(env.member_file(&m.pod, "etc/guestconfig/configmeta.json").await.is_some(), "{}", m.pod);
        assert!(env.member_file(&m.pod, "usr/bin/configcli").await.is_none(), "{}", m.pod);
        assert_eq!(staging_left(&m.pod), Vec::<String>::new(), "{}: staging folder removed", m.pod);
    }
}

#[test]
fn the_spoke_refuses_a_configcli_package_it_cannot_read() {
    let out = Command::new(env!("CARGO_BIN_EXE_kdfed-spoke"))
        .args(["--standalone", "--configcli-package", "/nonexistent/configcli.tgz"])
        .output()
        .expect("run kdfed-spoke");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid configuration: configcli_package: cannot read /nonexistent/configcli.tgz: "),
        "{stderr}"
    );
}
