//! Objects the intent steps' unit tests start from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kdfed_crds::app::KubeDirectorApp;
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterSpec, KubeDirectorClusterStatus, PlacementStatus};
use kdfed_crds::federation::KubeDirectorMember;
use serde_json::json;

/// A point on the hub's clock.
pub fn at(second: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_000_000 + second).expect("time")
}

/// A condition of `type_` that last changed at `since`.
pub fn condition_since(type_: &str, status: &str, reason: &str, since: jiff::Timestamp) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: format!("{reason} here"),
        last_transition_time: Time(since),
        observed_generation: None,
    }
}

/// A cluster spec from its JSON.
pub fn spec(value: serde_json::Value) -> KubeDirectorClusterSpec {
    serde_json::from_value(value).expect("cluster spec")
}

/// A cluster `name` in `default` of app `a`, placed on `member` (epoch 1) if given, that
/// connects to the clusters `connects_to`.
pub fn intent(name: &str, member: Option<&str>, connects_to: &[&str]) -> KubeDirectorCluster {
    let mut c: KubeDirectorCluster = serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "generation": 2},
        "spec": {"app": "a", "roles": [], "connections": {"clusters": connects_to}}
    }))
    .expect("cluster");
    if let Some(m) = member {
        c.status = Some(KubeDirectorClusterStatus {
            placement: Some(PlacementStatus { member: m.into(), epoch: 1, time: None }),
            ..KubeDirectorClusterStatus::default()
        });
    }
    c
}

/// A cluster of the minimal app ([`app`]) with `members` web members asking for `cpu`.
pub fn web_intent(name: &str, members: i32, cpu: &str) -> KubeDirectorCluster {
    let mut c = intent(name, None, &[]);
    c.spec.roles = vec![
        serde_json::from_value(json!({"id": "web", "members": members, "resources": {"requests": {"cpu": cpu}}}))
            .expect("role"),
    ];
    c
}

/// The minimal app (examples/apps/minimal.yaml): one role `web`.
pub fn app() -> KubeDirectorApp {
    serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": "a", "namespace": "default"},
        "spec": {
            "label": {"name": "Minimal app"}, "distroID": "kdfed/minimal", "version": "1.0",
            "configSchemaVersion": 7, "defaultConfigPackage": null,
            "services": [{"id": "web", "label": {"name": "Web"}, "endpoint": {"urlScheme": "http", "port": 8080}}],
            "roles": [{"id": "web", "cardinality": "1+", "imageRepoTag": "docker.io/library/nginx:1.27"}],
            "config": {"selectedRoles": ["web"], "roleServices": [{"roleID": "web", "serviceIDs": ["web"]}]},
        }
    }))
    .expect("app")
}

/// A member cluster `name` whose `Available` condition is `available` since `since`
/// (no condition at all for `None`), with `cpu` allocatable.
pub fn member_cluster(name: &str, available: Option<&str>, since: jiff::Timestamp, cpu: &str) -> KubeDirectorMember {
    let conditions: Vec<Condition> =
        available.map(|a| condition_since("Available", a, "HeartbeatRenewed", since)).into_iter().collect();
    serde_json::from_value(json!({
        "apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember",
        "metadata": {"name": name}, "spec": {},
        "status": {
            "conditions": conditions,
            "capacity": {"allocatable": {"cpu": cpu, "memory": "64Gi"}, "requested": {}, "nodes": 1},
        }
    }))
    .expect("member")
}
