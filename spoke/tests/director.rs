//! The director on a real control plane with KWOK nodes: clusters are built, expanded,
//! shrunk, repaired and deleted as upstream KubeDirector does it.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod, Service};
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::Testbed;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(120);

mod support;
use support::Director;

struct Env {
    bed: Testbed,
    client: Client,
}

async fn env() -> Env {
    let bed = Testbed::start(&["east"]).await.expect("test bed");
    let client = bed.client("east").await.expect("client");
    kdfed_common::crds::install(client.clone()).await.expect("CRDs");
    Env { bed, client }
}

impl Env {
    fn director(&self) -> Director {
        self.director_with_admin(0)
    }

    /// A director whose `/metrics` is on `127.0.0.1:admin_port`.
    fn director_with_admin(&self, admin_port: u16) -> Director {
        let c = self.bed.cluster("east");
        let n = std::fs::read_dir(&c.dir).map(|d| d.count()).unwrap_or(0);
        Director::start(&c.kubeconfig, &c.dir.join(format!("director-{n}.log")), &[], admin_port)
    }
}

/// A Spark-like app with four roles and no setup package.
fn spark_app() -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": "spark-lite"},
        "spec": {
            "label": {"name": "Spark lite"}, "distroID": "test/spark", "version": "1", "configSchemaVersion": 8,
            "defaultImageRepoTag": "example/spark:1", "defaultConfigPackage": null,
            "services": [
                {"id": "ssh", "endpoint": {"port": 22}},
                {"id": "master-ui", "endpoint": {"urlScheme": "http", "port": 8080, "isDashboard": true}},
                {"id": "worker-ui", "endpoint": {"urlScheme": "HTTP", "port": 8081, "isDashboard": true}},
                {"id": "notebook", "endpoint": {"urlScheme": "http", "port": 8888, "isDashboard": true}}
            ],
            "roles": [
                {"id": "controller", "cardinality": "1"},
                {"id": "worker", "cardinality": "1+"},
                {"id": "jupyter", "cardinality": "0+"},
                {"id": "gateway", "cardinality": "0+", "persistDirs": ["/var/lib/gw"]}
            ],
            "config": {
                "selectedRoles": ["controller", "worker", "jupyter", "gateway"],
                "roleServices": [
                    {"roleID": "controller", "serviceIDs": ["ssh", "master-ui"]},
                    {"roleID": "worker", "serviceIDs": ["ssh", "worker-ui"]},
                    {"roleID": "jupyter", "serviceIDs": ["notebook"]}
                ]
            }
        }
    })
}

fn spark_cluster(name: &str, workers: i32) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": name},
        "spec": {
            "app": "spark-lite", "serviceType": "NodePort", "namingScheme": "CrNameRole",
            "roles": [
                {"id": "controller", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}, "storage": {"size": "2Gi"}},
                {"id": "worker", "members": workers, "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                {"id": "jupyter", "members": 0},
                {"id": "gateway", "members": 1}
            ]
        }
    })
}

async fn create<K>(client: &Client, manifest: Value) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), "default");
    let object: K = serde_json::from_value(manifest).expect("typed");
    api.create(&PostParams::default(), &object).await.expect("create")
}

async fn wait_for<F>(clusters: &Api<KubeDirectorCluster>, name: &str, what: &str, mut done: F) -> KubeDirectorCluster
where
    F: FnMut(&KubeDirectorCluster) -> bool,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(c) = clusters.get_opt(name).await.expect("get cluster")
            && done(&c)
        {
            return c;
        }
        if tokio::time::Instant::now() > deadline {
            let c = clusters.get_opt(name).await.expect("get");
            panic!("{name}: not {what} after {TIMEOUT:?}: {:#?}", c.map(|c| c.status));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn state(c: &KubeDirectorCluster) -> &str {
    c.status.as_ref().and_then(|s| s.state.as_deref()).unwrap_or("")
}

/// Configured, and the status describes exactly the spec's member counts.
fn configured_with(c: &KubeDirectorCluster, counts: &[(&str, usize)]) -> bool {
    let Some(status) = &c.status else { return false };
    state(c) == "configured"
        && counts.iter().all(|(role, n)| {
            let members = status.roles.iter().find(|r| r.id == *role).map_or(0, |r| r.members.len());
            members == *n
        })
        && status.roles.iter().flat_map(|r| &r.members).all(|m| m.state == "configured")
}

fn members_of<'a>(c: &'a KubeDirectorCluster, role: &str) -> Vec<&'a kdfed_crds::cluster::MemberStatus> {
    c.status
        .as_ref()
        .and_then(|s| s.roles.iter().find(|r| r.id == role))
        .map(|r| r.members.iter().collect())
        .unwrap_or_default()
}

async fn names<K>(client: &Client, cluster: &str) -> BTreeSet<String>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels(&format!("kubedirector.hpe.com/kdcluster={cluster}"));
    api.list(&lp).await.expect("list").items.iter().map(ResourceExt::name_any).collect()
}

async fn live_pods(client: &Client, cluster: &str) -> BTreeSet<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels(&format!("kubedirector.hpe.com/kdcluster={cluster}"));
    api.list(&lp)
        .await
        .expect("list")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(ResourceExt::name_any)
        .collect()
}

async fn events_of(client: &Client, cluster: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(cluster))
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Waits until an Event about `cluster` matches (the director records Events right after
/// the status a test waits for, so the Event may come a moment later).
async fn wait_event<F>(client: &Client, cluster: &str, what: &str, matches: F)
where
    F: Fn(&(String, String, String)) -> bool,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events = events_of(client, cluster).await;
        if events.iter().any(&matches) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Event {what}: {events:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn set_members(clusters: &Api<KubeDirectorCluster>, name: &str, role_index: usize, members: i32) {
    let mut c = clusters.get(name).await.expect("get");
    c.spec.roles[role_index].members = Some(members);
    c.metadata.managed_fields = None;
    c.status = None;
    clusters.replace(name, &PostParams::default(), &c).await.expect("update spec");
}

#[tokio::test]
async fn a_spark_like_cluster_is_built_expanded_shrunk_repaired_and_deleted() {
    let env = env().await;
    let client = env.client.clone();
    let _director = env.director();
    create::<KubeDirectorApp>(&client, spark_app()).await;
    create::<KubeDirectorCluster>(&client, spark_cluster("spark", 1)).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");

    // Built: one StatefulSet per role with members, none for the empty jupyter role.
    let c = wait_for(&clusters, "spark", "configured", |c| {
        configured_with(c, &[("controller", 1), ("worker", 1), ("gateway", 1)])
    })
    .await;
    let status = c.status.clone().expect("status");
    assert!(status.roles.iter().all(|r| r.id != "jupyter"), "a role with zero members has no status");
    assert_eq!(status.members_ready.as_deref(), Some("3/3"));
    let rollup = status.member_state_rollup.clone().expect("rollup");
    assert!(!rollup.membership_changing && !rollup.config_errors && !rollup.members_down);
    let sts = names::<StatefulSet>(&client, "spark").await;
    assert_eq!(sts.len(), 3, "{sts:?}");
    for role in ["controller", "worker", "gateway"] {
        let name = &status.roles.iter().find(|r| r.id == role).expect("role").stateful_set;
        assert!(name.starts_with(&format!("spark-{role}-")), "CrNameRole names: {name}");
        assert!(sts.contains(name));
    }
    let node_ids: BTreeSet<i64> = status.roles.iter().flat_map(|r| &r.members).map(|m| m.node_id).collect();
    assert_eq!(node_ids, BTreeSet::from([1, 2, 3]));

    // Services: headless, and one per member of roles with ports, typed and named by scheme.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let headless = services.get(status.cluster_service.as_deref().expect("clusterService")).await.expect("headless");
    assert_eq!(headless.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()), Some("None"));
    let controller = members_of(&c, "controller")[0].clone();
    let svc = services.get(&controller.service).await.expect("controller member service");
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    let ports: Vec<(String, i32)> =
        spec.ports.unwrap_or_default().into_iter().map(|p| (p.name.unwrap_or_default(), p.port)).collect();
    assert_eq!(ports, vec![("generic-ssh".to_string(), 22), ("http-master-ui".to_string(), 8080)]);
    let worker_svc = services.get(&members_of(&c, "worker")[0].service).await.expect("worker service");
    let worker_ports: Vec<String> =
        worker_svc.spec.and_then(|s| s.ports).unwrap_or_default().into_iter().filter_map(|p| p.name).collect();
    assert_eq!(worker_ports, vec!["generic-ssh", "http-worker-ui"], "schemes are lower-cased");
    assert_eq!(members_of(&c, "gateway")[0].service, "n/a", "a role without ports gets no member service");

    // Storage: the controller's PVC exists and is bound; its StatefulSet seeds /etc.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pvc_name = controller.pvc.clone().expect("controller has a pvc");
    assert_eq!(pvc_name, format!("p-{}", controller.pod));
    let pvc = pvcs.get(&pvc_name).await.expect("pvc");
    assert_eq!(pvc.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let controller_sts = statefulsets
        .get(&status.roles.iter().find(|r| r.id == "controller").expect("role").stateful_set)
        .await
        .expect("sts");
    let pod_spec = controller_sts.spec.as_ref().and_then(|s| s.template.spec.clone()).expect("pod spec");
    let init = pod_spec.init_containers.unwrap_or_default();
    assert_eq!(init.len(), 1);
    assert!(init[0].args.as_ref().is_some_and(|a| a.join(" ").contains("/etc")), "{:?}", init[0].args);
    assert_eq!(controller_sts.spec.as_ref().and_then(|s| s.pod_management_policy.as_deref()), Some("Parallel"));

    // Expand the 1+ worker role 1 → 3.
    set_members(&clusters, "spark", 1, 3).await;
    let c = wait_for(&clusters, "spark", "expanded", |c| configured_with(c, &[("worker", 3)])).await;
    let workers: Vec<String> = members_of(&c, "worker").iter().map(|m| m.pod.clone()).collect();
    let sts_name = c
        .status
        .as_ref()
        .expect("status")
        .roles
        .iter()
        .find(|r| r.id == "worker")
        .expect("worker")
        .stateful_set
        .clone();
    assert_eq!(workers, (0..3).map(|i| format!("{sts_name}-{i}")).collect::<Vec<_>>());
    let ids: Vec<i64> = members_of(&c, "worker").iter().map(|m| m.node_id).collect();
    assert_eq!(&ids[1..], &[4, 5], "new members get new node ids");
    assert!(live_pods(&client, "spark").await.is_superset(&workers.iter().cloned().collect()));

    // Shrink 3 → 1: the highest ordinals go, with their Services.
    set_members(&clusters, "spark", 1, 1).await;
    let c = wait_for(&clusters, "spark", "shrunk", |c| configured_with(c, &[("worker", 1)])).await;
    assert_eq!(members_of(&c, "worker")[0].pod, format!("{sts_name}-0"));
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let pods = live_pods(&client, "spark").await;
        let svcs = names::<Service>(&client, "spark").await;
        let gone = !pods.contains(&format!("{sts_name}-1")) && !pods.contains(&format!("{sts_name}-2"));
        let svc_gone = !svcs.contains(&format!("s-{sts_name}-1")) && !svcs.contains(&format!("s-{sts_name}-2"));
        if gone && svc_gone {
            assert_eq!(pods.len(), 3, "{pods:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "shrunk members linger: {pods:?} {svcs:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A pod killed by hand comes back, and its member goes through setup again.
    let before = members_of(&c, "controller")[0].state_detail.last_configured_container.clone().expect("container id");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.delete(&controller.pod, &DeleteParams::default()).await.expect("kill pod");
    let c = wait_for(&clusters, "spark", "re-set-up", |c| {
        configured_with(c, &[("controller", 1)])
            && members_of(c, "controller")[0]
                .state_detail
                .last_configured_container
                .as_deref()
                .is_some_and(|id| id != before)
    })
    .await;
    assert_eq!(members_of(&c, "controller")[0].node_id, controller.node_id, "same member, same node id");
    let changed = format!("container ID has changed for member{{{}}}", controller.pod);
    wait_event(&client, "spark", &changed, |(_, r, m)| r == "Member" && m.starts_with(&changed)).await;

    // A cardinality violation is refused with upstream's message; nothing running is touched.
    set_members(&clusters, "spark", 0, 2).await;
    let expected = "Invalid member count for role(controller). Specified member count:2 Role cardinality:1";
    let c = wait_for(&clusters, "spark", "marked invalid", |c| {
        c.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|k| k.type_ == "Valid" && k.status == "False" && k.message.contains(expected))
        })
    })
    .await;
    assert_eq!(state(&c), "configured");
    assert_eq!(live_pods(&client, "spark").await.len(), 3);
    wait_event(&client, "spark", expected, |(t, _, m)| {
        t == "Warning" && m.contains(expected) && m.contains("spec.roles[0].members")
    })
    .await;
    set_members(&clusters, "spark", 0, 1).await;
    wait_for(&clusters, "spark", "valid again", |c| {
        c.status.as_ref().is_some_and(|s| s.conditions.iter().any(|k| k.type_ == "Valid" && k.status == "True"))
    })
    .await;

    // Deleting the cluster removes everything it created, PVCs included (the default).
    clusters.delete("spark", &DeleteParams::default()).await.expect("delete");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let gone = clusters.get_opt("spark").await.expect("get").is_none();
        let sts = names::<StatefulSet>(&client, "spark").await;
        let svcs = names::<Service>(&client, "spark").await;
        let pods = names::<Pod>(&client, "spark").await;
        let claim = pvcs.get_opt(&pvc_name).await.expect("pvc").filter(|p| p.metadata.deletion_timestamp.is_none());
        if gone && sts.is_empty() && svcs.is_empty() && pods.is_empty() && claim.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: cluster {gone} {sts:?} {svcs:?} {pods:?} {claim:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn retained_pvcs_survive_deletion_and_bad_clusters_do_not_block_good_ones() {
    let env = env().await;
    let client = env.client.clone();
    let _director = env.director();
    create::<KubeDirectorApp>(&client, spark_app()).await;
    let mut retained = spark_cluster("keep", 1);
    retained["spec"]["persistentVolumeClaimRetentionPolicy"] = json!({"whenDeleted": "Retain"});
    let mut orphan = spark_cluster("orphan", 1);
    orphan["spec"]["app"] = json!("no-such-app");
    create::<KubeDirectorCluster>(&client, orphan).await;
    create::<KubeDirectorCluster>(&client, retained).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    let c =
        wait_for(&clusters, "keep", "configured", |c| configured_with(c, &[("controller", 1), ("worker", 1)])).await;
    let orphan = wait_for(&clusters, "orphan", "marked invalid", |c| {
        c.status.as_ref().is_some_and(|s| s.conditions.iter().any(|k| k.type_ == "Valid" && k.status == "False"))
    })
    .await;
    let message = &orphan.status.expect("status").conditions[0].message;
    assert_eq!(message, "Invalid app(no-such-app). This app resource ID has not been registered.");
    assert!(names::<StatefulSet>(&client, "orphan").await.is_empty());

    // A member the scheduler cannot place carries the scheduler's message in its stateDetail.
    let mut huge = spark_cluster("huge", 1);
    huge["spec"]["roles"][1]["resources"] = json!({"requests": {"cpu": "500", "memory": "1Gi"}});
    create::<KubeDirectorCluster>(&client, huge).await;
    let stuck = wait_for(&clusters, "huge", "reporting the scheduling error", |c| {
        members_of(c, "worker")
            .first()
            .and_then(|m| m.state_detail.scheduling_error_message.clone())
            .is_some_and(|m| m.contains("Insufficient cpu"))
    })
    .await;
    assert_eq!(members_of(&stuck, "worker")[0].state, "create pending");
    assert!(stuck.status.as_ref().and_then(|s| s.member_state_rollup.as_ref()).is_some_and(|r| r.members_waiting));

    let pvc = members_of(&c, "controller")[0].pvc.clone().expect("pvc");
    clusters.delete("keep", &DeleteParams::default()).await.expect("delete");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while clusters.get_opt("keep").await.expect("get").is_some() || !names::<Pod>(&client, "keep").await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "cluster not deleted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let claim = pvcs.get_opt(&pvc).await.expect("get pvc").expect("retained PVC still exists");
    assert!(claim.metadata.deletion_timestamp.is_none(), "retained PVC is not being deleted");
}

#[tokio::test]
async fn a_director_restarted_mid_creation_converges_without_duplicates() {
    let env = env().await;
    let client = env.client.clone();
    create::<KubeDirectorApp>(&client, spark_app()).await;
    let mut manifest = spark_cluster("restart", 4);
    manifest["spec"]["namingScheme"] = json!("UID");
    create::<KubeDirectorCluster>(&client, manifest).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");

    // Kill the director as soon as it has started building, then start a new one.
    let mut first = env.director();
    wait_for(&clusters, "restart", "started", |c| c.status.as_ref().is_some_and(|s| !s.roles.is_empty())).await;
    first.kill();
    let _second = env.director();
    let c = wait_for(&clusters, "restart", "configured", |c| {
        configured_with(c, &[("controller", 1), ("worker", 4), ("gateway", 1)])
    })
    .await;

    let status = c.status.expect("status");
    let ids: Vec<i64> = status.roles.iter().flat_map(|r| &r.members).map(|m| m.node_id).collect();
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "node ids are unique: {ids:?}");
    assert_eq!(names::<StatefulSet>(&client, "restart").await.len(), 3, "one StatefulSet per role");
    for r in &status.roles {
        assert!(r.stateful_set.starts_with("kdss-"), "UID names: {}", r.stateful_set);
    }
    let pods = live_pods(&client, "restart").await;
    let expected: BTreeSet<String> = status.roles.iter().flat_map(|r| &r.members).map(|m| m.pod.clone()).collect();
    assert_eq!(pods, expected, "exactly the members' pods");
    let services = names::<Service>(&client, "restart").await;
    assert_eq!(services.len(), 1 + 1 + 4, "headless + controller + 4 workers: {services:?}");
}

#[tokio::test]
async fn a_role_scaled_to_zero_loses_its_statefulset_and_status() {
    let env = env().await;
    let client = env.client.clone();
    let _director = env.director();
    create::<KubeDirectorApp>(&client, spark_app()).await;
    create::<KubeDirectorCluster>(&client, spark_cluster("zero", 1)).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    wait_for(&clusters, "zero", "configured", |c| configured_with(c, &[("gateway", 1)])).await;
    // A 0+ role shrunk to zero loses its StatefulSet and its role status.
    let patch = Patch::Json::<()>(
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/roles/3/members", "value": 0}])).expect("patch"),
    );
    clusters.patch("zero", &PatchParams::default(), &patch).await.expect("scale gateway to zero");
    let c = wait_for(&clusters, "zero", "without gateway", |c| {
        configured_with(c, &[("controller", 1), ("worker", 1)])
            && c.status.as_ref().is_some_and(|s| s.roles.iter().all(|r| r.id != "gateway"))
    })
    .await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while names::<StatefulSet>(&client, "zero").await.len() != 2 {
        assert!(tokio::time::Instant::now() < deadline, "gateway StatefulSet not deleted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(c.status.expect("status").members_ready.as_deref(), Some("2/2"));
}

/// The value of one series on the director's `/metrics`, once its admin server answers.
async fn metric(admin_port: u16, series: &str) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("curl")
            .args(["-fsS", &format!("http://127.0.0.1:{admin_port}/metrics")])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let value = text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')));
        if let Some(v) = value {
            return v.trim().parse().expect("number");
        }
        assert!(tokio::time::Instant::now() < deadline, "no {series} on /metrics: {text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn condition<'a>(
    c: &'a KubeDirectorCluster,
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    c.status.as_ref().and_then(|s| s.conditions.iter().find(|k| k.type_ == t))
}

#[tokio::test]
async fn a_cluster_the_api_server_refuses_is_reported_on_the_cluster_and_does_not_spin() {
    const RECONCILES: &str = "kdfed_spoke_reconcile_total{controller=\"director\"}";
    let env = env().await;
    let client = env.client.clone();
    let admin = kdfed_testbed::free_port().expect("port");
    let _director = env.director_with_admin(admin);
    create::<KubeDirectorApp>(&client, spark_app()).await;
    // Valid as far as kdfed can tell, refused by the member's API server: a node affinity
    // operator Kubernetes does not know, on every role with members (so nothing runs and
    // no pod events wake the director).
    let mut refused = spark_cluster("refused", 1);
    let sideways = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "Sideways", "values": ["a"]}]}]}}});
    for role in [0, 1, 3] {
        refused["spec"]["roles"][role]["affinity"] = sideways.clone();
    }
    create::<KubeDirectorCluster>(&client, refused).await;
    // A negative memory limit is caught by kdfed's own validation before any apply.
    let mut negative = spark_cluster("negative", 1);
    negative["spec"]["roles"][1]["resources"]["limits"] = json!({"memory": "-5Gi"});
    create::<KubeDirectorCluster>(&client, negative).await;

    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    let c = wait_for(&clusters, "refused", "reporting the refused apply", |c| {
        condition(c, "Applied").is_some_and(|k| k.status == "False" && k.reason == "ApplyFailed")
    })
    .await;
    let message = condition(&c, "Applied").map(|k| k.message.clone()).unwrap_or_default();
    assert!(message.starts_with("apply statefulset "), "names what was applied: {message}");
    assert!(message.contains("is invalid") && message.contains("Invalid value: \"Sideways\""), "{message}");
    wait_event(&client, "refused", "ApplyFailed", |(t, r, m)| t == "Warning" && r == "ApplyFailed" && m == &message)
        .await;
    let c = wait_for(&clusters, "negative", "marked invalid", |c| {
        condition(c, "Valid").is_some_and(|k| k.status == "False")
    })
    .await;
    let invalid = condition(&c, "Valid").map(|k| k.message.clone()).unwrap_or_default();
    assert!(
        invalid.contains("spec.roles[1].resources.limits[memory]: Invalid value: \"-5Gi\"")
            && invalid.contains("(rule: non-negative)"),
        "{invalid}"
    );

    // Neither spins: the failing one backs off, and no write of a pass wakes the next.
    let before = metric(admin, RECONCILES).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = metric(admin, RECONCILES).await;
    println!("{} reconciles in 10 s", after - before);
    assert!(after - before < 20.0, "{} reconciles in 10 s", after - before);
    let c = clusters.get("refused").await.expect("get");
    assert_eq!(
        c.annotations().get("kubedirector.hpe.com/hashChangeCounter").map(String::as_str),
        Some("1"),
        "the connections counter is bumped once, not once per failing pass"
    );
    let warnings = events_of(&client, "refused").await.into_iter().filter(|(_, r, _)| r == "ApplyFailed").count();
    assert_eq!(warnings, 1, "one Warning Event per distinct message");
    assert!(names::<StatefulSet>(&client, "refused").await.is_empty());

    // Fixing the spec is picked up at once, whatever the backoff, and clears the condition.
    let ops: Vec<Value> =
        [0, 1, 3].iter().map(|i| json!({"op": "remove", "path": format!("/spec/roles/{i}/affinity")})).collect();
    let patch = Patch::Json::<()>(serde_json::from_value(Value::Array(ops)).expect("patch"));
    clusters.patch("refused", &PatchParams::default(), &patch).await.expect("fix the affinity");
    let c = wait_for(&clusters, "refused", "configured", |c| {
        configured_with(c, &[("controller", 1), ("worker", 1), ("gateway", 1)])
    })
    .await;
    let applied = condition(&c, "Applied").expect("Applied");
    assert_eq!((applied.status.as_str(), applied.reason.as_str()), ("True", "Applied"));
    wait_event(&client, "refused", "Applied", |(t, r, _)| t == "Normal" && r == "Applied").await;
}

/// A corpus manifest (`tests/compat/`) as written, nulls and all.
fn corpus(rel: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat").join(rel);
    serde_saphyr::from_str(&std::fs::read_to_string(&path).expect("read corpus file")).expect("parse corpus file")
}

/// Creates `manifest` exactly as written (a typed round trip would drop its nulls).
async fn create_raw<K>(client: &Client, manifest: Value)
where
    K: kube::Resource<DynamicType = ()>,
{
    let resource = kube::api::ApiResource::erase::<K>(&());
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let object: kube::api::DynamicObject = serde_json::from_value(manifest).expect("object");
    api.create(&PostParams::default(), &object).await.expect("the API server accepts the manifest");
}

#[tokio::test]
async fn clusters_of_apps_with_upstream_role_ids_and_nulls_become_configured() {
    let env = env().await;
    let client = env.client.clone();
    let _director = env.director();
    for app in ["apps/centos.json", "apps/restserver.yaml", "apps/nulls.yaml"] {
        create_raw::<KubeDirectorApp>(&client, corpus(app)).await;
    }
    // centos.json: JSON with tabs, role `vanilla_centos`, `connections: {secrets: null}`;
    // nulls.yaml: role `web.Server` and null wherever upstream's types allow nil.
    create_raw::<KubeDirectorCluster>(&client, corpus("clusters/centos.json")).await;
    create_raw::<KubeDirectorCluster>(&client, corpus("clusters/nulls.yaml")).await;
    // Capitals in both schemes: CrNameRole derives StatefulSet names from the role ids.
    create_raw::<KubeDirectorCluster>(
        &client,
        json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": "rest-live"},
            "spec": {
                "app": "restserver-compat", "namingScheme": "CrNameRole", "connections": {"configmaps": null},
                "roles": [
                    {"id": "LoadBalancer", "members": 1, "resources": {"limits": {"cpu": "1", "memory": "256Mi"}}},
                    {"id": "RESTServer", "members": 2, "resources": {"limits": {"cpu": "1", "memory": "256Mi"}}, "env": null}
                ]
            }
        }),
    )
    .await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");

    let c = wait_for(&clusters, "centos-compat", "configured", |c| configured_with(c, &[("vanilla_centos", 2)])).await;
    let sts = &c.status.as_ref().expect("status").roles[0].stateful_set;
    assert!(sts.starts_with("kdss-"), "UID scheme: {sts}");
    wait_for(&clusters, "nulls", "configured", |c| configured_with(c, &[("web.Server", 1)])).await;
    let c = wait_for(&clusters, "rest-live", "configured", |c| {
        configured_with(c, &[("LoadBalancer", 1), ("RESTServer", 2)])
    })
    .await;
    let status = c.status.expect("status");
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    for (role, prefix) in [("LoadBalancer", "rest-live-loadbalancer-"), ("RESTServer", "rest-live-restserver-")] {
        let name = &status.roles.iter().find(|r| r.id == role).expect("role status").stateful_set;
        assert!(name.starts_with(prefix), "{role}: {name} (munged as upstream: lowercase)");
        let sts = statefulsets.get(name).await.expect("statefulset");
        let labels = sts.spec.and_then(|s| s.template.metadata).and_then(|m| m.labels).unwrap_or_default();
        assert_eq!(labels.get("kubedirector.hpe.com/role").map(String::as_str), Some(role), "the id as label value");
    }
    let pods = live_pods(&client, "rest-live").await;
    assert_eq!(pods.len(), 3, "{pods:?}");
    let services = names::<Service>(&client, "rest-live").await;
    assert!(services.iter().any(|s| s.starts_with("s-rest-live-restserver-")), "member services: {services:?}");
}

/// The objects of `cluster` as the director would build them, renamed as another controller
/// (upstream KubeDirector's random suffixes) would have named them.
fn prebuilt_objects(app: &Value, cluster: &KubeDirectorCluster, sts: &str, headless: &str) -> Vec<Value> {
    let app: KubeDirectorApp = serde_json::from_value(app.clone()).expect("app");
    let objects = kdfed_spoke::director::render::render(&app, cluster, None).expect("render");
    let text = serde_json::to_string(&objects).expect("json");
    let kdss = objects
        .iter()
        .find(|o| o["kind"] == "StatefulSet")
        .and_then(|o| o["metadata"]["name"].as_str())
        .expect("statefulset")
        .to_string();
    let kdhs = objects[0]["metadata"]["name"].as_str().expect("headless").to_string();
    serde_json::from_str(&text.replace(&kdss, sts).replace(&kdhs, headless)).expect("renamed")
}

#[tokio::test]
async fn a_running_cluster_whose_status_records_other_names_is_adopted_without_restarting_pods() {
    // What a migration relies on: names recorded in a cluster's status win over the names the
    // director would derive, and a member whose objects already match is not restarted.
    let env = env().await;
    let client = env.client.clone();
    let app = corpus("apps/centos.json");
    create::<KubeDirectorApp>(&client, app.clone()).await;
    let mut manifest = corpus("clusters/centos.json");
    manifest["spec"]["roles"][0]["members"] = json!(1);
    manifest["spec"]["connections"] = json!({});
    let cluster: KubeDirectorCluster = create(&client, manifest).await;
    let (sts, headless) = ("kdss-upstr", "kdhs-upstr");

    // Built before the director starts, under other names.
    for object in prebuilt_objects(&app, &cluster, sts, headless) {
        let kind = object["kind"].as_str().expect("kind");
        let name = object["metadata"]["name"].as_str().expect("name").to_string();
        match kind {
            "StatefulSet" => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
                api.create(&PostParams::default(), &serde_json::from_value(object).expect("sts")).await.expect(&name);
            }
            _ => {
                let api: Api<Service> = Api::namespaced(client.clone(), "default");
                api.create(&PostParams::default(), &serde_json::from_value(object).expect("svc")).await.expect(&name);
            }
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod_name = format!("{sts}-0");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let (pod_uid, container) = loop {
        if let Some(p) = pods.get_opt(&pod_name).await.expect("get pod") {
            let container = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == "app"))
                .and_then(|c| c.container_id.clone());
            if let Some(container) = container.filter(|c| !c.is_empty()) {
                break (p.metadata.uid.clone().expect("uid"), container);
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{pod_name} not running");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The status another controller left: configured, with its names.
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    let status = json!({"status": {
        "state": "configured", "clusterService": headless, "lastNodeID": 1, "specGenerationToProcess": 1,
        "roles": [{"id": "vanilla_centos", "statefulSet": sts, "members": [{
            "pod": pod_name, "service": format!("s-{pod_name}"), "state": "configured", "nodeID": 1,
            "stateDetail": {"lastConfiguredContainer": container, "lastConfigDataGeneration": 1, "lastSetupGeneration": 1}
        }]}]
    }});
    clusters
        .patch_status("centos-compat", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status as another controller left it");

    let _director = env.director();
    let c = wait_for(&clusters, "centos-compat", "adopted", |c| {
        configured_with(c, &[("vanilla_centos", 1)])
            && c.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == "kubedirector.hpe.com/cleanup"))
    })
    .await;
    let status = c.status.expect("status");
    assert_eq!(status.cluster_service.as_deref(), Some(headless));
    assert_eq!(status.roles[0].stateful_set, sts);
    // A few more passes: still the same objects and the same pod.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(names::<StatefulSet>(&client, "centos-compat").await, BTreeSet::from([sts.to_string()]));
    let services = names::<Service>(&client, "centos-compat").await;
    assert_eq!(services, BTreeSet::from([headless.to_string(), format!("s-{pod_name}")]), "no second headless Service");
    let pod = pods.get(&pod_name).await.expect("pod");
    assert_eq!(pod.metadata.uid.as_deref(), Some(pod_uid.as_str()), "the member's pod was not recreated");
    let restarts: i32 =
        pod.status.and_then(|s| s.container_statuses).unwrap_or_default().iter().map(|c| c.restart_count).sum();
    assert_eq!(restarts, 0);
}

/// A claim made by hand as the StatefulSet controller makes them: `p-<statefulset>-<N>`,
/// labelled with `cluster` (when given) and the role.
fn claim_manifest(name: &str, cluster: Option<&str>) -> Value {
    let mut labels = json!({"kubedirector.hpe.com/role": "worker"});
    if let Some(cluster) = cluster {
        labels["kubedirector.hpe.com/kdcluster"] = json!(cluster);
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    })
}

/// The container each worker was last set up in.
fn worker_containers(c: &KubeDirectorCluster) -> Vec<Option<String>> {
    members_of(c, "worker").iter().map(|m| m.state_detail.last_configured_container.clone()).collect()
}

/// Name and uid of each claim of `cluster` that is not being deleted.
async fn live_claims(client: &Client, cluster: &str) -> BTreeSet<(String, String)> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels(&format!("kubedirector.hpe.com/kdcluster={cluster}"));
    let items = api.list(&lp).await.expect("list claims").items;
    items
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| (c.name_any(), c.metadata.uid.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn a_claim_left_behind_by_a_statefulset_deleted_mid_shrink_goes_only_with_when_scaled_delete() {
    let env = env().await;
    let client = env.client.clone();
    let _director = env.director();
    create::<KubeDirectorApp>(&client, spark_app()).await;
    let with_storage = |name: &str| {
        let mut c = spark_cluster(name, 2);
        c["spec"]["roles"][1]["storage"] = json!({"size": "1Gi"});
        c
    };
    let mut hoard = with_storage("hoard");
    hoard["spec"]["persistentVolumeClaimRetentionPolicy"] = json!({"whenScaled": "Retain"});
    create::<KubeDirectorCluster>(&client, with_storage("sweep")).await;
    create::<KubeDirectorCluster>(&client, hoard).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    let counts = [("controller", 1), ("worker", 2), ("gateway", 1)];
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let mut left_behind = Vec::new();
    for name in ["sweep", "hoard"] {
        let c = wait_for(&clusters, name, "configured", |c| configured_with(c, &counts)).await;
        let containers = worker_containers(&c);
        let status = c.status.expect("status");
        let sts = status.roles.iter().find(|r| r.id == "worker").expect("worker").stateful_set.clone();
        let members = live_claims(&client, name).await;
        // What the StatefulSet controller leaves when its StatefulSet is deleted before it
        // processed a scale-down: a claim of an ordinal above the members, with no owner, and
        // (never to be touched) a claim of another cluster and one without the cluster label.
        create::<PersistentVolumeClaim>(&client, claim_manifest(&format!("p-{sts}-3"), Some(name))).await;
        create::<PersistentVolumeClaim>(&client, claim_manifest(&format!("p-{sts}-4"), Some("someone-else"))).await;
        create::<PersistentVolumeClaim>(&client, claim_manifest(&format!("p-{sts}-5"), None)).await;
        statefulsets.delete(&sts, &DeleteParams::default()).await.expect("delete the worker statefulset");
        left_behind.push((name, sts, members, containers));
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    for (name, sts, members, containers) in &left_behind {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while statefulsets.get_opt(sts).await.expect("get").is_none_or(|s| s.metadata.deletion_timestamp.is_some()) {
            assert!(tokio::time::Instant::now() < deadline, "{name}: worker StatefulSet not built again");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The workers' pods went with their StatefulSet: they come back and are set up again.
        wait_for(&clusters, name, "set up again", |c| {
            let now = worker_containers(c);
            configured_with(c, &counts) && now.iter().zip(containers).all(|(n, b)| n != b)
        })
        .await;
        let stray = format!("p-{sts}-3");
        let mut expected = members.clone();
        if *name == "sweep" {
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            while live_claims(&client, name).await != *members {
                let now = live_claims(&client, name).await;
                assert!(tokio::time::Instant::now() < deadline, "the stray claim stays: {now:?}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let said = format!("claim {stray} of ordinal 3 belongs to no member; whenScaled: Delete");
            wait_event(&client, name, &said, |(t, r, m)| t == "Normal" && r == "Member" && m.starts_with(&said)).await;
        } else {
            // Passes of the re-set-up members went by; with Retain the claim stays.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let uid = pvcs.get(&stray).await.expect("the retained claim").metadata.uid.unwrap_or_default();
            expected.insert((stray, uid));
        }
        assert_eq!(live_claims(&client, name).await, expected, "{name}: the members' claims, untouched");
        for other in [format!("p-{sts}-4"), format!("p-{sts}-5")] {
            let claim = pvcs.get(&other).await.expect("a claim that is not the cluster's");
            assert!(claim.metadata.deletion_timestamp.is_none(), "{other} is not the director's to delete");
        }
    }
}

/// A settled cluster's passes skip applying what nothing changed (the idle cost), so an
/// object changed behind the director's back must still be repaired: its watch event
/// changes what the pass reads, and the pass applies again.
#[tokio::test]
async fn a_settled_cluster_whose_objects_change_behind_its_back_is_repaired() {
    let env = env().await;
    let client = env.client.clone();
    let _director = env.director();
    create::<KubeDirectorApp>(&client, spark_app()).await;
    create::<KubeDirectorCluster>(&client, spark_cluster("drift", 1)).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    let c = wait_for(&clusters, "drift", "configured", |c| {
        configured_with(c, &[("controller", 1), ("worker", 1), ("gateway", 1)])
    })
    .await;
    // Let the passes after the last status write find nothing to do.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = c.status.expect("status");
    let worker = status.roles.iter().find(|r| r.id == "worker").expect("worker role");
    let (sts_name, pod) = (worker.stateful_set.clone(), worker.members[0].pod.clone());
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let member_service = format!("s-{pod}");
    assert!(services.get_opt(&member_service).await.expect("get").is_some(), "{member_service} missing");
    // One change at a time, each after the passes settled again: a deleted member Service
    // alone, then a StatefulSet scaled by hand alone.
    services.delete(&member_service, &DeleteParams::default()).await.expect("delete member service");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while services.get_opt(&member_service).await.expect("get service").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "{member_service} not built again after {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let scale = Patch::Merge(json!({"spec": {"replicas": 0}}));
    statefulsets.patch(&sts_name, &PatchParams::default(), &scale).await.expect("scale down by hand");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let replicas = statefulsets.get(&sts_name).await.expect("get statefulset").spec.and_then(|s| s.replicas);
        if replicas == Some(1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sts_name} at {replicas:?} replicas after {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
