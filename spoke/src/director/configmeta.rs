//! configmeta: the description of the whole cluster that every member of a role with a setup
//! package finds in `/etc/guestconfig/configmeta.json`, in upstream KubeDirector's exact
//! structure (read by configcli and by app setup scripts): `version`, `services`,
//! `nodegroups["1"]` with each role's services, node ids, FQDNs and flavor, `distros`,
//! `cluster`, `node` (the member itself) and `connections`.
//!
//! Upstream marshals Go structs, so absent lists are `null`, absent strings `""`, and map
//! keys come out sorted (as `serde_json`'s maps do here).

use std::collections::BTreeMap;

use kdfed_crds::app::{KubeDirectorAppSpec, Service};
use kdfed_crds::cluster::{MemberStatus, Role};
use kdfed_crds::quantity;
use serde::Serialize;
use serde_json::Value;

/// Where configmeta is written inside a member.
pub const PATH: &str = "/etc/guestconfig/configmeta.json";

/// The only node group upstream ever writes.
const NODEGROUP: &str = "1";
/// What upstream writes for the flavor fields it does not know.
const NOT_AVAILABLE: &str = "n/a";

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
    /// Its app, with defaults applied and its config as the cluster's choices make it.
    pub app: &'a KubeDirectorAppSpec,
    /// `<headless service>.<namespace><domain base>`: members are `<pod>.<domain>`.
    pub domain: String,
    /// Roles with members, in spec order.
    pub roles: Vec<RoleMembers<'a>>,
    /// kdfed: the value of each of the app's config choices (empty for apps without).
    pub choices: &'a BTreeMap<String, String>,
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

// The document's parts, field for field upstream's Go structs (`pkg/catalog`): absent lists
// are `null` (Option without skipping), map keys come out sorted (BTreeMap).

/// A reference to another place of the document, which configcli follows.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct RefKey {
    bdvlibrefkey: Vec<String>,
}

/// Per id: node group → the value (upstream nests everything under node group `"1"`).
type ByNodeGroup<T> = BTreeMap<String, T>;

/// The whole document (upstream's `configmeta`).
#[derive(Serialize, Clone, Debug, PartialEq)]
struct Document {
    version: String,
    /// Service id → node group → role id → the role's service entry.
    services: BTreeMap<String, ByNodeGroup<BTreeMap<String, RefKey>>>,
    nodegroups: ByNodeGroup<NodeGroup>,
    /// Distro id → node group → the node group.
    distros: BTreeMap<String, ByNodeGroup<RefKey>>,
    cluster: ClusterInfo,
    node: Option<Node>,
    connections: DocumentConnections,
}

/// Upstream's `nodegroup`.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct NodeGroup {
    roles: BTreeMap<String, RoleInfo>,
    distro_id: String,
    catalog_entry_version: String,
    config_metadata: Option<BTreeMap<String, String>>,
}

/// Upstream's `role`.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct RoleInfo {
    services: BTreeMap<String, ServiceInfo>,
    node_ids: Vec<String>,
    hostnames: Vec<String>,
    fqdns: Vec<String>,
    fqdn_mappings: BTreeMap<String, String>,
    flavor: Flavor,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    secret_keys: BTreeMap<String, String>,
}

/// Upstream's `service` (one service of one role).
#[derive(Serialize, Clone, Debug, PartialEq)]
struct ServiceInfo {
    qualifiers: Vec<String>,
    name: String,
    id: String,
    hostnames: RefKey,
    global_id: String,
    fqdns: RefKey,
    exported_service: String,
    /// `null` when the service has no port.
    endpoints: Option<Vec<String>>,
    #[serde(rename = "authToken")]
    auth_token: String,
}

/// Upstream's `flavor`: only memory and cores are known.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct Flavor {
    storage: String,
    name: String,
    memory: String,
    description: String,
    cores: String,
}

/// Upstream's `cluster`.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct ClusterInfo {
    name: String,
    isolated: bool,
    id: String,
    config_metadata: ByNodeGroup<RefKey>,
    /// kdfed: choice id → value, for apps with config choices.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    config_choices: BTreeMap<String, String>,
}

/// Upstream's `node`: the member reading the document.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct Node {
    role_id: String,
    nodegroup_id: String,
    id: String,
    hostname: String,
    fqdn: String,
    domain: String,
    distro_id: String,
    depends_on: BTreeMap<String, Vec<String>>,
}

/// Upstream's `connections`; every part `null` until the connected objects are added.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
struct DocumentConnections {
    clusters: Option<BTreeMap<String, Value>>,
    /// Type label value → the ConfigMaps of that type.
    configmaps: Option<BTreeMap<String, Vec<ConnectedEntry>>>,
    /// Type label value → the Secrets of that type.
    secrets: Option<BTreeMap<String, Vec<ConnectedEntry>>>,
}

/// A connected ConfigMap or Secret as the document shows it.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct ConnectedEntry {
    metadata: ConnectedName,
    data: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// The `metadata` of a connected object: only its name.
#[derive(Serialize, Clone, Debug, PartialEq)]
struct ConnectedName {
    name: String,
}

/// The document parts as JSON. They hold only strings, numbers, booleans, lists and maps
/// with string keys, which serde_json always represents, so the error branch is unreachable.
fn to_json<T: Serialize>(part: &T) -> Value {
    serde_json::to_value(part).unwrap_or(Value::Null)
}

fn refkey(path: &[&str]) -> RefKey {
    RefKey { bdvlibrefkey: path.iter().map(|p| (*p).to_string()).collect() }
}

/// References from where the document sits: its root, or `connections.clusters.<name>` of
/// the document that embeds it.
struct References<'a> {
    prefix: Vec<&'a str>,
}

impl<'a> References<'a> {
    fn new(connected_as: Option<&'a str>) -> Self {
        Self { prefix: connected_as.map(|c| vec!["connections", "clusters", c]).unwrap_or_default() }
    }

    fn to(&self, rest: &[&str]) -> RefKey {
        let mut path = self.prefix.clone();
        path.extend_from_slice(rest);
        refkey(&path)
    }
}

/// The domain members' FQDNs end in: `<headless>.<namespace><domain base>`.
pub fn domain(headless: &str, namespace: &str, domain_base: &str) -> String {
    format!("{headless}.{namespace}{domain_base}")
}

/// The part of configmeta that is the same in every member; `connected_as` is set when the
/// document describes a connected cluster (reference keys then start at
/// `connections.clusters.<name>`). `node` is `null` and `connections` empty.
pub fn cluster_document(view: &ClusterView<'_>, connected_as: Option<&str>) -> Value {
    to_json(&document(view, connected_as))
}

fn document(view: &ClusterView<'_>, connected_as: Option<&str>) -> Document {
    let app = view.app;
    let refs = References::new(connected_as);
    let nodegroup = NodeGroup {
        roles: view.roles.iter().map(|r| (r.spec.id.clone(), role_info(view, r))).collect(),
        distro_id: app.distro_id.clone(),
        catalog_entry_version: app.version.clone(),
        config_metadata: app.config.config_meta.clone(),
    };
    Document {
        version: app.config_schema_version.to_string(),
        services: services(view, &refs),
        nodegroups: BTreeMap::from([(NODEGROUP.to_string(), nodegroup)]),
        distros: BTreeMap::from([(
            app.distro_id.clone(),
            BTreeMap::from([(NODEGROUP.to_string(), refs.to(&["nodegroups", NODEGROUP]))]),
        )]),
        cluster: ClusterInfo {
            name: connected_as.unwrap_or(view.name).to_string(),
            isolated: false,
            id: view.uid.to_string(),
            // Never prefixed for a connected cluster (nor are the services' hostnames and fqdns
            // references), unlike `services` and `distros`.
            config_metadata: BTreeMap::from([(
                NODEGROUP.to_string(),
                refkey(&["nodegroups", NODEGROUP, "config_metadata"]),
            )]),
            config_choices: view.choices.clone(),
        },
        node: None,
        connections: DocumentConnections::default(),
    }
}

/// Service id → `{"1": {role: reference}}` for every role (with members) running it;
/// services no such role runs are left out.
fn services(view: &ClusterView<'_>, refs: &References<'_>) -> BTreeMap<String, ByNodeGroup<BTreeMap<String, RefKey>>> {
    let app = view.app;
    let mut services = BTreeMap::new();
    for service in &app.services {
        let mut by_role = BTreeMap::new();
        for rs in &app.config.role_services {
            if rs.service_ids.contains(&service.id) && view.roles.iter().any(|r| r.spec.id == rs.role_id) {
                let path = ["nodegroups", NODEGROUP, "roles", &rs.role_id, "services", &service.id];
                by_role.insert(rs.role_id.clone(), refs.to(&path));
            }
        }
        if !by_role.is_empty() {
            services.insert(service.id.clone(), BTreeMap::from([(NODEGROUP.to_string(), by_role)]));
        }
    }
    services
}

/// A role's entry: its members' node ids and FQDNs (upstream's hostnames are FQDNs too),
/// its services, flavor and secret keys.
fn role_info(view: &ClusterView<'_>, role: &RoleMembers<'_>) -> RoleInfo {
    let fqdns: Vec<String> = role.members.iter().map(|m| format!("{}.{}", m.pod, view.domain)).collect();
    let node_ids: Vec<String> = role.members.iter().map(|m| m.node_id.to_string()).collect();
    // Upstream puts the token of the last member that has one.
    let token = role.members.iter().rev().find_map(|m| m.auth_token.clone()).unwrap_or_default();
    let id = role.spec.id.as_str();
    RoleInfo {
        services: view
            .app
            .role_services(id)
            .into_iter()
            .map(|s| (s.id.clone(), service_info(id, s, &fqdns, &token)))
            .collect(),
        fqdn_mappings: fqdns.iter().cloned().zip(node_ids.iter().cloned()).collect(),
        node_ids,
        hostnames: fqdns.clone(),
        fqdns,
        flavor: flavor(role.spec),
        secret_keys: role.secret_keys.clone(),
    }
}

/// One service of a role: its endpoints on every member (`null` without a port).
fn service_info(role_id: &str, service: &Service, fqdns: &[String], token: &str) -> ServiceInfo {
    let endpoint = service.endpoint.clone().unwrap_or_default();
    let scheme = endpoint.url_scheme.unwrap_or_default();
    let endpoints = endpoint.port.map(|port| fqdns.iter().map(|f| format!("{scheme}://{f}:{port}")).collect());
    ServiceInfo {
        qualifiers: Vec::new(),
        name: service.label.as_ref().map(|l| l.name.clone()).unwrap_or_default(),
        id: service.id.clone(),
        hostnames: refkey(&["nodegroups", NODEGROUP, "roles", role_id, "hostnames"]),
        global_id: format!("{NODEGROUP}_{role_id}_{}", service.id),
        fqdns: refkey(&["nodegroups", NODEGROUP, "roles", role_id, "fqdns"]),
        exported_service: service.exported_service.clone().unwrap_or_default(),
        endpoints,
        auth_token: token.to_string(),
    }
}

/// Memory in MiB and cores (rounded up) from the role's limits; storage and names are "n/a".
fn flavor(role: &Role) -> Flavor {
    let limit = |key: &str| {
        role.resources.limits.as_ref().and_then(|l| l.get(key)).and_then(|q| quantity::parse(&q.0)).unwrap_or(0.0)
    };
    let memory_mb = (limit("memory").ceil() as i64) / (1024 * 1024);
    let cores = limit("cpu").ceil() as i64;
    Flavor {
        storage: NOT_AVAILABLE.to_string(),
        name: NOT_AVAILABLE.to_string(),
        memory: memory_mb.to_string(),
        description: NOT_AVAILABLE.to_string(),
        cores: cores.to_string(),
    }
}

/// Connected objects grouped by their type label. Secrets show every string base64-encoded
/// (as upstream's documents do), ConfigMaps as text.
fn connected_entries(list: &[ConnectedObject], base64: bool) -> BTreeMap<String, Vec<ConnectedEntry>> {
    let text = |v: &[u8]| if base64 { encode_bytes(v) } else { String::from_utf8_lossy(v).into_owned() };
    let strings = |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| (k.clone(), text(v.as_bytes()))).collect();
    let mut by_kind: BTreeMap<String, Vec<ConnectedEntry>> = BTreeMap::new();
    for o in list {
        by_kind.entry(o.kind.clone()).or_default().push(ConnectedEntry {
            metadata: ConnectedName { name: text(o.name.as_bytes()) },
            data: o.data.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
            labels: strings(&o.labels),
            annotations: strings(&o.annotations),
        });
    }
    by_kind
}

/// Adds the connected objects to a cluster document.
pub fn with_connections(mut document: Value, connections: &Connections) -> Value {
    let part = DocumentConnections {
        clusters: Some(connections.clusters.clone()),
        configmaps: Some(connected_entries(&connections.configmaps, false)),
        secrets: Some(connected_entries(&connections.secrets, true)),
    };
    document["connections"] = to_json(&part);
    document
}

/// The document for one member: the cluster document with `node` describing it. `None`
/// when the member is not in the view.
pub fn for_member(view: &ClusterView<'_>, cluster_document: &Value, pod: &str) -> Option<Value> {
    let role = view.roles.iter().find(|r| r.members.iter().any(|m| m.pod == pod))?;
    let member = role.members.iter().find(|m| m.pod == pod)?;
    let fqdn = format!("{pod}.{}", view.domain);
    let node = Node {
        role_id: role.spec.id.clone(),
        nodegroup_id: NODEGROUP.to_string(),
        id: member.node_id.to_string(),
        hostname: fqdn.clone(),
        fqdn,
        domain: view.domain.clone(),
        distro_id: view.app.distro_id.clone(),
        depends_on: BTreeMap::new(),
    };
    let mut document = cluster_document.clone();
    document["node"] = to_json(&node);
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
    use serde_json::json;

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
        static NO_CHOICES: BTreeMap<String, String> = BTreeMap::new();
        ClusterView {
            name: "sp",
            uid: "uid-1",
            app,
            domain: domain("kdhs-ccccc", "ns", ".svc.cluster.local"),
            roles,
            choices: &NO_CHOICES,
        }
    }

    #[test]
    fn flavor_rounds_cores_up_and_shows_memory_in_mebibytes() {
        let (_, cluster) = (app(), cluster());
        let controller = flavor(&cluster.spec.roles[0]);
        assert_eq!((controller.cores.as_str(), controller.memory.as_str()), ("2", "4096"));
        assert_eq!(flavor(&Role::default()).cores, "0", "no limits, no cores");
        assert_eq!(
            to_json(&flavor(&Role::default())),
            json!({"storage": "n/a", "name": "n/a", "memory": "0", "description": "n/a", "cores": "0"})
        );
    }

    #[test]
    fn a_service_without_a_port_has_null_endpoints() {
        let app = app();
        let fqdns = ["a.d".to_string(), "b.d".to_string()];
        let agent = app.service("agent").expect("agent");
        assert_eq!(to_json(&service_info("worker", agent, &fqdns, ""))["endpoints"], Value::Null);
        let ui = app.service("ui").expect("ui");
        let info = service_info("controller", ui, &fqdns, "tok");
        assert_eq!(info.endpoints, Some(vec!["http://a.d:8080".to_string(), "http://b.d:8080".to_string()]));
        assert_eq!((info.global_id.as_str(), info.auth_token.as_str()), ("1_controller_ui", "tok"));
    }

    #[test]
    fn references_of_a_connected_cluster_start_where_it_is_embedded() {
        assert_eq!(References::new(None).to(&["nodegroups", "1"]), refkey(&["nodegroups", "1"]));
        assert_eq!(
            to_json(&References::new(Some("db")).to(&["nodegroups", "1"])),
            json!({"bdvlibrefkey": ["connections", "clusters", "db", "nodegroups", "1"]})
        );
    }

    #[test]
    fn services_only_list_roles_that_have_members() {
        let (app, cluster) = (app(), cluster());
        let view = view(&app, &cluster);
        let services = services(&view, &References::new(None));
        // `edge` has no members in the view, so `unused` (only edge runs it) is left out.
        assert_eq!(services.keys().collect::<Vec<_>>(), ["agent", "ssh", "ui"]);
        assert_eq!(services["ssh"]["1"].keys().collect::<Vec<_>>(), ["controller", "worker"]);
    }

    #[test]
    fn a_fresh_cluster_document_has_no_node_and_null_connections() {
        let (app, cluster) = (app(), cluster());
        let document = cluster_document(&view(&app, &cluster), None);
        assert_eq!(document["node"], Value::Null);
        assert_eq!(document["connections"], json!({"clusters": null, "configmaps": null, "secrets": null}));
        assert!(document["nodegroups"]["1"]["roles"]["controller"].get("secret_keys").is_none(), "no keys, no field");
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
