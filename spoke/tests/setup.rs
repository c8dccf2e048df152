//! Setup packages on a real control plane whose KWOK pods really run exec'd commands (each
//! pod's files live in its own folder of the test bed): the director writes configmeta,
//! installs a real setup package (a tgz built here, fetched from a `file://` URL), runs
//! `startscript --configure` once per member, tells the roles that ask about members coming
//! and going, waits for `--delnodes` before members go, reports a failing script in
//! `config error` and sets a replaced container up again; connected objects reach members
//! through `--reconnect`, endpoints with `hasAuthToken` get stable tokens, setup waits for
//! systemd where the app needs it, and a package that cannot be fetched is a config error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Service};
use kdfed_crds::cluster::MemberStatus;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::Testbed;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
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
    director: Director,
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

fn start_director(bed: &Testbed) -> Director {
    let c = bed.cluster("east");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(c.dir.join("director.log")).expect("log");
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
    Director(child)
}

async fn env() -> Env {
    let bed = Testbed::start(&["east"]).await.expect("test bed");
    let client = bed.client("east").await.expect("client");
    kdfed_common::crds::install(client.clone()).await.expect("CRDs");
    let director = start_director(&bed);
    let package = build_package(&bed.dir);
    let app = recorder_app(&package);
    let apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "default");
    apps.create(&PostParams::default(), &serde_json::from_value(app).expect("app")).await.expect("create app");
    Env { bed, client, director, package }
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
        use std::os::unix::fs::PermissionsExt;
        let path = self.member_fs(pod).await.join("usr/bin/systemctl");
        std::fs::create_dir_all(path.parent().expect("usr/bin")).expect("usr/bin");
        std::fs::write(&path, "#!/bin/sh\necho 'systemd-journald.service - Journal Service'\nexit 0\n")
            .expect("systemctl");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// Messages of the Events recorded about the cluster `name`.
    async fn events(&self, name: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
        events.list(&lp).await.expect("events").items.into_iter().filter_map(|e| e.message).collect()
    }

    /// Stops the director and starts a new one (its memory is the clusters' status only).
    fn restart_director(&mut self) {
        let _ = self.director.0.kill();
        let _ = self.director.0.wait();
        self.director = start_director(&self.bed);
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
    assert!(env.events("dep").await.iter().any(|m| m == "connected to cluster {main}; updating it"));
    assert!(env.events("main").await.iter().any(|m| m == "connected cluster {dep} has changed"));
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
    assert_eq!(env.events("sd").await.iter().filter(|m| **m == message).count(), 1, "one Event, not one per pass");

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
    assert!(env.events("sd").await.contains(&expected), "{:?}", env.events("sd").await);
}
