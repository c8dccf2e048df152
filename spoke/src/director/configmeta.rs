//! configmeta: the description of the whole cluster that every member of a role with a setup
//! package finds in `/etc/guestconfig/configmeta.json`, in upstream KubeDirector's exact
//! structure (read by configcli and by app setup scripts): `version`, `services`,
//! `nodegroups["1"]` with each role's services, node ids, FQDNs and flavor, `distros`,
//! `cluster`, `node` (the member itself) and `connections`.
//!
//! Upstream marshals Go structs, so absent lists are `null`, absent strings `""`, and map
//! keys come out sorted (as `serde_json`'s maps do here).

use std::collections::BTreeMap;

use kdfed_crds::app::KubeDirectorAppSpec;
use kdfed_crds::cluster::{MemberStatus, Role};
use kdfed_crds::quantity;
use serde_json::{Map, Value, json};

/// Where configmeta is written inside a member.
pub const PATH: &str = "/etc/guestconfig/configmeta.json";

/// One role's members as they appear in configmeta.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleMembers<'a> {
    /// The role as the cluster spec asks for it (resources give the flavor).
    pub spec: &'a Role,
    /// Its members that are not being removed, in status order.
    pub members: Vec<&'a MemberStatus>,
    /// Secret keys of the role, decrypted (`name` → value).
    pub secret_keys: BTreeMap<String, String>,
}

/// A connected ConfigMap or Secret: its type label value, name, data, labels, annotations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectedObject {
    /// Value of its `kubedirector.hpe.com/cmType` or `kubedirector.hpe.com/secretType` label.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Data (for Secrets, the bytes; encoded as base64 in the document).
    pub data: BTreeMap<String, Vec<u8>>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Everything configmeta describes about one cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterView<'a> {
    /// Cluster name.
    pub name: &'a str,
    /// Cluster UID.
    pub uid: &'a str,
    /// Its app, with defaults applied.
    pub app: &'a KubeDirectorAppSpec,
    /// `<headless service>.<namespace><domain base>`: members are `<pod>.<domain>`.
    pub domain: String,
    /// Roles with members, in spec order.
    pub roles: Vec<RoleMembers<'a>>,
}

/// The connected objects of a cluster (`spec.connections`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Connections {
    /// Connected clusters: name → their configmeta (without `node`).
    pub clusters: BTreeMap<String, Value>,
    /// Connected ConfigMaps that carry a type label.
    pub configmaps: Vec<ConnectedObject>,
    /// Connected Secrets that carry a type label.
    pub secrets: Vec<ConnectedObject>,
}

fn refkeys(path: &[&str]) -> Value {
    json!({ "bdvlibrefkey": path })
}

/// The domain members' FQDNs end in: `<headless>.<namespace><domain base>`.
pub fn domain(headless: &str, namespace: &str, domain_base: &str) -> String {
    format!("{headless}.{namespace}{domain_base}")
}

/// The part of configmeta that is the same in every member; `connected_as` is set when the
/// document describes a connected cluster (reference keys then start at
/// `connections.clusters.<name>`). `node` is `null` and `connections` empty.
pub fn cluster_document(view: &ClusterView<'_>, connected_as: Option<&str>) -> Value {
    let app = view.app;
    let prefix: Vec<&str> = connected_as.map(|c| vec!["connections", "clusters", c]).unwrap_or_default();
    let with_prefix = |rest: &[&str]| -> Value {
        let mut path = prefix.clone();
        path.extend_from_slice(rest);
        refkeys(&path)
    };

    // services: service id → {"1": {role: refkey}} for every role (with members) running it.
    let mut services = Map::new();
    for service in &app.services {
        let mut by_role = Map::new();
        for rs in &app.config.role_services {
            if rs.service_ids.contains(&service.id) && view.roles.iter().any(|r| r.spec.id == rs.role_id) {
                by_role.insert(
                    rs.role_id.clone(),
                    with_prefix(&["nodegroups", "1", "roles", &rs.role_id, "services", &service.id]),
                );
            }
        }
        if !by_role.is_empty() {
            services.insert(service.id.clone(), json!({ "1": by_role }));
        }
    }

    let mut roles = Map::new();
    for role in &view.roles {
        let id = role.spec.id.as_str();
        let fqdns: Vec<String> = role.members.iter().map(|m| format!("{}.{}", m.pod, view.domain)).collect();
        let node_ids: Vec<String> = role.members.iter().map(|m| m.node_id.to_string()).collect();
        let mappings: Map<String, Value> =
            fqdns.iter().zip(&node_ids).map(|(f, n)| (f.clone(), Value::String(n.clone()))).collect();
        let mut role_services = Map::new();
        for service in app.role_services(id) {
            let endpoint = service.endpoint.clone().unwrap_or_default();
            let endpoints: Value = match endpoint.port {
                Some(port) => Value::from(
                    fqdns
                        .iter()
                        .map(|f| format!("{}://{f}:{port}", endpoint.url_scheme.clone().unwrap_or_default()))
                        .collect::<Vec<_>>(),
                ),
                None => Value::Null,
            };
            // Upstream puts the token of the last member that has one.
            let token = role.members.iter().rev().find_map(|m| m.auth_token.clone()).unwrap_or_default();
            role_services.insert(
                service.id.clone(),
                json!({
                    "qualifiers": [],
                    "name": service.label.as_ref().map(|l| l.name.clone()).unwrap_or_default(),
                    "id": service.id,
                    "hostnames": refkeys(&["nodegroups", "1", "roles", id, "hostnames"]),
                    "global_id": format!("1_{id}_{}", service.id),
                    "fqdns": refkeys(&["nodegroups", "1", "roles", id, "fqdns"]),
                    "exported_service": service.exported_service.clone().unwrap_or_default(),
                    "endpoints": endpoints,
                    "authToken": token,
                }),
            );
        }
        let mut entry = json!({
            "services": role_services,
            "node_ids": node_ids,
            "hostnames": fqdns,
            "fqdns": fqdns,
            "fqdn_mappings": mappings,
            "flavor": flavor(role.spec),
        });
        if !role.secret_keys.is_empty() {
            entry["secret_keys"] = json!(role.secret_keys);
        }
        roles.insert(id.to_string(), entry);
    }

    let name = connected_as.unwrap_or(view.name);
    json!({
        "version": app.config_schema_version.to_string(),
        "services": services,
        "nodegroups": {
            "1": {
                "roles": roles,
                "distro_id": app.distro_id,
                "catalog_entry_version": app.version,
                "config_metadata": app.config.config_meta,
            }
        },
        "distros": { app.distro_id.clone(): { "1": with_prefix(&["nodegroups", "1"]) } },
        "cluster": {
            "name": name,
            "isolated": false,
            "id": view.uid,
            "config_metadata": { "1": refkeys(&["nodegroups", "1", "config_metadata"]) },
        },
        "node": null,
        "connections": { "clusters": null, "configmaps": null, "secrets": null },
    })
}

/// Memory in MiB and cores (rounded up) from the role's limits; storage and names are "n/a".
fn flavor(role: &Role) -> Value {
    let limit = |key: &str| {
        role.resources.limits.as_ref().and_then(|l| l.get(key)).and_then(|q| quantity::parse(&q.0)).unwrap_or(0.0)
    };
    let memory_mb = (limit("memory").ceil() as i64) / (1024 * 1024);
    let cores = limit("cpu").ceil() as i64;
    json!({
        "storage": "n/a",
        "name": "n/a",
        "memory": memory_mb.to_string(),
        "description": "n/a",
        "cores": cores.to_string(),
    })
}

/// Adds the connected objects to a cluster document.
pub fn with_connections(mut document: Value, connections: &Connections) -> Value {
    let objects = |list: &[ConnectedObject], bytes: bool| -> Value {
        let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for o in list {
            let text = |v: &[u8]| {
                if bytes { Value::String(encode_bytes(v)) } else { Value::String(String::from_utf8_lossy(v).into()) }
            };
            let strings = |m: &BTreeMap<String, String>| -> Map<String, Value> {
                m.iter().map(|(k, v)| (k.clone(), text(v.as_bytes()))).collect()
            };
            let data: Map<String, Value> = o.data.iter().map(|(k, v)| (k.clone(), text(v))).collect();
            by_kind.entry(o.kind.clone()).or_default().push(json!({
                "metadata": { "name": text(o.name.as_bytes()) },
                "data": data,
                "labels": strings(&o.labels),
                "annotations": strings(&o.annotations),
            }));
        }
        json!(by_kind)
    };
    document["connections"] = json!({
        "clusters": connections.clusters,
        "configmaps": objects(&connections.configmaps, false),
        "secrets": objects(&connections.secrets, true),
    });
    document
}

/// The document for one member: the cluster document with `node` describing it. `None`
/// when the member is not in the view.
pub fn for_member(view: &ClusterView<'_>, cluster_document: &Value, pod: &str) -> Option<Value> {
    let role = view.roles.iter().find(|r| r.members.iter().any(|m| m.pod == pod))?;
    let member = role.members.iter().find(|m| m.pod == pod)?;
    let fqdn = format!("{pod}.{}", view.domain);
    let mut document = cluster_document.clone();
    document["node"] = json!({
        "role_id": role.spec.id,
        "nodegroup_id": "1",
        "id": member.node_id.to_string(),
        "hostname": fqdn,
        "fqdn": fqdn,
        "domain": view.domain,
        "distro_id": view.app.distro_id,
        "depends_on": {},
    });
    Some(document)
}

/// Bytes as JSON shows them in upstream's (Go's) documents: standard base64 with padding.
fn encode_bytes(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_encoded_like_go() {
        assert_eq!(encode_bytes(b""), "");
        assert_eq!(encode_bytes(b"f"), "Zg==");
        assert_eq!(encode_bytes(b"fo"), "Zm8=");
        assert_eq!(encode_bytes(b"foo"), "Zm9v");
        assert_eq!(encode_bytes(b"hunter2"), "aHVudGVyMg==");
    }
    use kdfed_crds::app::KubeDirectorApp;
    use kdfed_crds::cluster::KubeDirectorCluster;

    fn app() -> KubeDirectorAppSpec {
        let app: KubeDirectorApp = serde_json::from_value(json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp", "metadata": {"name": "spark"},
            "spec": {
                "label": {"name": "Spark"}, "distroID": "bluedata/spark", "version": "2.4", "configSchemaVersion": 7,
                "defaultImageRepoTag": "img:1",
                "services": [
                    {"id": "ssh", "label": {"name": "SSH"}, "endpoint": {"port": 22}},
                    {"id": "ui", "label": {"name": "Spark UI"}, "endpoint": {"urlScheme": "http", "port": 8080}, "exported_service": "spark-ui"},
                    {"id": "agent", "label": {"name": "Agent"}},
                    {"id": "unused", "label": {"name": "Unused"}, "endpoint": {"port": 9}}
                ],
                "roles": [{"id": "controller", "cardinality": "1"}, {"id": "worker", "cardinality": "0+"}, {"id": "edge", "cardinality": "0+"}],
                "config": {
                    "selectedRoles": ["controller", "worker", "edge"],
                    "roleServices": [
                        {"roleID": "controller", "serviceIDs": ["ssh", "ui"]},
                        {"roleID": "worker", "serviceIDs": ["ssh", "agent"]},
                        {"roleID": "edge", "serviceIDs": ["unused"]}
                    ],
                    "configMeta": {"spark.mode": "standalone"}
                }
            }
        }))
        .expect("app");
        app.spec
    }

    fn cluster() -> KubeDirectorCluster {
        serde_json::from_value(json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": "sp", "namespace": "ns", "uid": "uid-1"},
            "spec": {"app": "spark", "roles": [
                {"id": "controller", "members": 1, "resources": {"limits": {"cpu": "1500m", "memory": "4Gi"}}},
                {"id": "worker", "members": 2, "resources": {"requests": {"cpu": "1"}}},
                {"id": "edge", "members": 0}
            ]},
            "status": {"roles": [
                {"id": "controller", "statefulSet": "kdss-aaaaa", "members": [
                    {"pod": "kdss-aaaaa-0", "state": "configured", "nodeID": 1, "authToken": "tok"}
                ]},
                {"id": "worker", "statefulSet": "kdss-bbbbb", "members": [
                    {"pod": "kdss-bbbbb-0", "state": "configured", "nodeID": 2},
                    {"pod": "kdss-bbbbb-1", "state": "creating", "nodeID": 3}
                ]}
            ]}
        }))
        .expect("cluster")
    }

    /// The reference: upstream's `configmeta` for this cluster, written out by hand from the
    /// format (Go structs `configmeta`, `nodegroup`, `role`, `service`, `flavor`, `node`,
    /// `refkeys` of `pkg/catalog`) — not generated by the code under test.
    fn reference() -> Value {
        let d = "kdhs-ccccc.ns.svc.cluster.local";
        json!({
            "version": "7",
            "services": {
                "ssh": {"1": {
                    "controller": {"bdvlibrefkey": ["nodegroups", "1", "roles", "controller", "services", "ssh"]},
                    "worker": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "services", "ssh"]}
                }},
                "ui": {"1": {"controller": {"bdvlibrefkey": ["nodegroups", "1", "roles", "controller", "services", "ui"]}}},
                "agent": {"1": {"worker": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "services", "agent"]}}}
            },
            "nodegroups": {"1": {
                "roles": {
                    "controller": {
                        "services": {
                            "ssh": {
                                "qualifiers": [], "name": "SSH", "id": "ssh",
                                "hostnames": {"bdvlibrefkey": ["nodegroups", "1", "roles", "controller", "hostnames"]},
                                "global_id": "1_controller_ssh",
                                "fqdns": {"bdvlibrefkey": ["nodegroups", "1", "roles", "controller", "fqdns"]},
                                "exported_service": "",
                                "endpoints": [format!("://kdss-aaaaa-0.{d}:22")],
                                "authToken": "tok"
                            },
                            "ui": {
                                "qualifiers": [], "name": "Spark UI", "id": "ui",
                                "hostnames": {"bdvlibrefkey": ["nodegroups", "1", "roles", "controller", "hostnames"]},
                                "global_id": "1_controller_ui",
                                "fqdns": {"bdvlibrefkey": ["nodegroups", "1", "roles", "controller", "fqdns"]},
                                "exported_service": "spark-ui",
                                "endpoints": [format!("http://kdss-aaaaa-0.{d}:8080")],
                                "authToken": "tok"
                            }
                        },
                        "node_ids": ["1"],
                        "hostnames": [format!("kdss-aaaaa-0.{d}")],
                        "fqdns": [format!("kdss-aaaaa-0.{d}")],
                        "fqdn_mappings": {format!("kdss-aaaaa-0.{d}"): "1"},
                        "flavor": {"storage": "n/a", "name": "n/a", "memory": "4096", "description": "n/a", "cores": "2"}
                    },
                    "worker": {
                        "services": {
                            "ssh": {
                                "qualifiers": [], "name": "SSH", "id": "ssh",
                                "hostnames": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "hostnames"]},
                                "global_id": "1_worker_ssh",
                                "fqdns": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "fqdns"]},
                                "exported_service": "",
                                "endpoints": [format!("://kdss-bbbbb-0.{d}:22"), format!("://kdss-bbbbb-1.{d}:22")],
                                "authToken": ""
                            },
                            "agent": {
                                "qualifiers": [], "name": "Agent", "id": "agent",
                                "hostnames": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "hostnames"]},
                                "global_id": "1_worker_agent",
                                "fqdns": {"bdvlibrefkey": ["nodegroups", "1", "roles", "worker", "fqdns"]},
                                "exported_service": "",
                                "endpoints": null,
                                "authToken": ""
                            }
                        },
                        "node_ids": ["2", "3"],
                        "hostnames": [format!("kdss-bbbbb-0.{d}"), format!("kdss-bbbbb-1.{d}")],
                        "fqdns": [format!("kdss-bbbbb-0.{d}"), format!("kdss-bbbbb-1.{d}")],
                        "fqdn_mappings": {format!("kdss-bbbbb-0.{d}"): "2", format!("kdss-bbbbb-1.{d}"): "3"},
                        "flavor": {"storage": "n/a", "name": "n/a", "memory": "0", "description": "n/a", "cores": "0"},
                        "secret_keys": {"db-password": "hunter2"}
                    }
                },
                "distro_id": "bluedata/spark",
                "catalog_entry_version": "2.4",
                "config_metadata": {"spark.mode": "standalone"}
            }},
            "distros": {"bluedata/spark": {"1": {"bdvlibrefkey": ["nodegroups", "1"]}}},
            "cluster": {
                "name": "sp", "isolated": false, "id": "uid-1",
                "config_metadata": {"1": {"bdvlibrefkey": ["nodegroups", "1", "config_metadata"]}}
            },
            "node": {
                "role_id": "worker", "nodegroup_id": "1", "id": "3",
                "hostname": format!("kdss-bbbbb-1.{d}"), "fqdn": format!("kdss-bbbbb-1.{d}"),
                "domain": d, "distro_id": "bluedata/spark", "depends_on": {}
            },
            "connections": {"clusters": {}, "configmaps": {}, "secrets": {}}
        })
    }

    fn view<'a>(app: &'a KubeDirectorAppSpec, cluster: &'a KubeDirectorCluster) -> ClusterView<'a> {
        let status = cluster.status.as_ref().expect("status");
        let roles = cluster
            .spec
            .roles
            .iter()
            .filter_map(|spec| {
                let members: Vec<&MemberStatus> =
                    status.roles.iter().find(|r| r.id == spec.id)?.members.iter().collect();
                let secret_keys = if spec.id == "worker" {
                    [("db-password".to_string(), "hunter2".to_string())].into()
                } else {
                    BTreeMap::new()
                };
                Some(RoleMembers { spec, members, secret_keys })
            })
            .collect();
        ClusterView { name: "sp", uid: "uid-1", app, domain: domain("kdhs-ccccc", "ns", ".svc.cluster.local"), roles }
    }

    #[test]
    fn a_members_configmeta_matches_upstreams_format() {
        let (app, cluster) = (app(), cluster());
        let view = view(&app, &cluster);
        let base = with_connections(cluster_document(&view, None), &Connections::default());
        let document = for_member(&view, &base, "kdss-bbbbb-1").expect("member");
        assert_eq!(document, reference(), "\n{}", serde_json::to_string_pretty(&document).unwrap_or_default());
        assert!(for_member(&view, &base, "kdss-zzzzz-0").is_none());
    }

    #[test]
    fn connected_objects_are_grouped_by_type_and_secrets_are_base64() {
        let (app, cluster) = (app(), cluster());
        let view = view(&app, &cluster);
        let other = cluster_document(&view, Some("other"));
        assert_eq!(
            other["distros"]["bluedata/spark"]["1"]["bdvlibrefkey"],
            json!(["connections", "clusters", "other", "nodegroups", "1"])
        );
        assert_eq!(
            other["services"]["ssh"]["1"]["worker"]["bdvlibrefkey"],
            json!(["connections", "clusters", "other", "nodegroups", "1", "roles", "worker", "services", "ssh"])
        );
        assert_eq!(other["cluster"]["name"], "other");
        let connections = Connections {
            clusters: [("other".to_string(), other.clone())].into(),
            configmaps: vec![ConnectedObject {
                kind: "spark-conf".into(),
                name: "cm1".into(),
                data: [("k".to_string(), b"v".to_vec())].into(),
                ..ConnectedObject::default()
            }],
            secrets: vec![ConnectedObject {
                kind: "creds".into(),
                name: "s1".into(),
                data: [("password".to_string(), b"hunter2".to_vec())].into(),
                ..ConnectedObject::default()
            }],
        };
        let document = with_connections(cluster_document(&view, None), &connections);
        assert_eq!(document["connections"]["clusters"]["other"], other);
        assert_eq!(
            document["connections"]["configmaps"],
            json!({"spark-conf": [{"metadata": {"name": "cm1"}, "data": {"k": "v"}, "labels": {}, "annotations": {}}]})
        );
        assert_eq!(
            document["connections"]["secrets"],
            json!({"creds": [{"metadata": {"name": "czE="}, "data": {"password": "aHVudGVyMg=="}, "labels": {}, "annotations": {}}]})
        );
    }
}
