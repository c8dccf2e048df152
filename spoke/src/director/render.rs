//! `kdfed render`: every object the director would create for a cluster, built offline by
//! the same functions the controller uses.

use kdfed_crds::app::KubeDirectorApp;
use kdfed_crds::cluster::{APP_CATALOG_LOCAL, KubeDirectorCluster, MemberStatus};
use kdfed_crds::config::KubeDirectorConfigSpec;
use kdfed_crds::defaults;
use kdfed_crds::validate::{FieldError, ValidationErrors};
use kube::ResourceExt;
use serde_json::Value;

use super::build::{self, Inputs};
use super::{configmeta, names};

/// Why a cluster cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The app or cluster breaks validation rules.
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    /// An object could not be built.
    #[error(transparent)]
    Build(#[from] build::BuildError),
    /// An object could not be serialized.
    #[error("cannot serialize: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// A cluster resolved against its app, with what `render` fills in for a manifest that was
/// never stored: the namespace (`default`) and the UID seed of generated names.
struct Prepared {
    resolved: kdfed_crds::Resolved,
    /// The cluster with its namespace and `metadata.uid` (the seed) set.
    cluster: KubeDirectorCluster,
    namespace: String,
    /// `metadata.uid`, or `<namespace>/<name>` when the manifest has none.
    seed: String,
    headless: String,
}

impl Prepared {
    /// The StatefulSet name of a role.
    fn statefulset(&self, role_id: &str) -> String {
        let naming = self.resolved.cluster.naming_scheme.clone().unwrap_or_default();
        names::statefulset(&naming, &self.cluster.name_any(), &self.seed, role_id)
    }
}

/// Checks the cluster names this app, then resolves both (defaults and validation).
fn prepare(
    app: &KubeDirectorApp,
    cluster: &KubeDirectorCluster,
    config: Option<&KubeDirectorConfigSpec>,
) -> Result<Prepared, RenderError> {
    if app.name_any() != cluster.spec.app {
        return Err(ValidationErrors(vec![FieldError {
            path: "spec.app".into(),
            rule: "known-app",
            message: format!("Invalid app({}). The given app is {:?}.", cluster.spec.app, app.name_any()),
        }])
        .into());
    }
    let resolved = kdfed_crds::resolve(&app.spec, &cluster.spec, config)?;
    let mut cluster = cluster.clone();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".to_string());
    cluster.metadata.namespace = Some(namespace.clone());
    let seed = cluster.metadata.uid.clone().unwrap_or_else(|| format!("{namespace}/{}", cluster.name_any()));
    cluster.metadata.uid = Some(seed.clone());
    let headless = names::headless_service(&seed);
    Ok(Prepared { resolved, cluster, namespace, seed, headless })
}

/// The objects for `cluster` with every member it asks for: the headless Service, then per
/// role its StatefulSet and member Services. Names in the `UID` scheme derive from
/// `metadata.uid`, or from `<namespace>/<name>` when the manifest has none.
pub fn render(
    app: &KubeDirectorApp,
    cluster: &KubeDirectorCluster,
    config: Option<&KubeDirectorConfigSpec>,
) -> Result<Vec<Value>, RenderError> {
    let prepared = prepare(app, cluster, config)?;
    let resolved = &prepared.resolved;
    let catalog = resolved.cluster.app_catalog.clone().unwrap_or_else(|| APP_CATALOG_LOCAL.to_string());
    let inputs = Inputs {
        cluster: &prepared.cluster,
        spec: &resolved.cluster,
        app_name: &prepared.cluster.spec.app,
        app: &resolved.chosen,
        config,
        app_catalog: &catalog,
        headless: &prepared.headless,
    };
    let mut out = vec![serde_json::to_value(inputs.headless_service()?)?];
    for role in resolved.active_roles() {
        let sts = prepared.statefulset(&role.spec.id);
        out.push(serde_json::to_value(inputs.statefulset(role.spec, &sts, role.members)?)?);
        for ordinal in 0..role.members.max(0) as usize {
            if let Some(svc) = inputs.member_service(role.spec, &names::pod(&sts, ordinal))? {
                out.push(serde_json::to_value(svc)?);
            }
        }
    }
    Ok(out)
}

/// The configmeta every member of roles with a setup package would find in
/// `/etc/guestconfig/configmeta.json` once the cluster is built: a JSON object from pod name
/// to document. Node ids count from 1 in spec order; connected objects are not looked up
/// (offline), so `connections` is empty.
pub fn render_configmeta(
    app: &KubeDirectorApp,
    cluster: &KubeDirectorCluster,
    config: Option<&KubeDirectorConfigSpec>,
) -> Result<Value, RenderError> {
    let prepared = prepare(app, cluster, config)?;
    let resolved = &prepared.resolved;
    let members = every_member(&prepared);
    let master_key = config.and_then(|c| c.master_encryption_key.as_deref());
    let roles = resolved
        .roles()
        .zip(&members)
        .filter(|(_, list)| !list.is_empty())
        .map(|(role, list)| configmeta::RoleMembers {
            spec: role.spec,
            members: list.iter().collect(),
            secret_keys: kdfed_common::secretkeys::plain_values(&role.spec.secret_keys, master_key).0,
        })
        .collect();
    let domain_base = config
        .and_then(|c| c.cluster_svc_domain_base.clone())
        .unwrap_or_else(|| defaults::DEFAULT_SVC_DOMAIN_BASE.to_string());
    let name = prepared.cluster.name_any();
    let view = configmeta::ClusterView {
        name: &name,
        uid: &prepared.seed,
        app: &resolved.chosen,
        domain: configmeta::domain(&prepared.headless, &prepared.namespace, &domain_base),
        roles,
        choices: &resolved.choices,
    };
    let base =
        configmeta::with_connections(configmeta::cluster_document(&view, None), &configmeta::Connections::default());
    let mut out = serde_json::Map::new();
    for (role, list) in resolved.roles().zip(&members) {
        if !build::has_setup_package(role.app) {
            continue;
        }
        for m in list {
            if let Some(document) = configmeta::for_member(&view, &base, &m.pod) {
                out.insert(m.pod.clone(), document);
            }
        }
    }
    Ok(Value::Object(out))
}

/// Every member the cluster asks for, per role (in the order of `Resolved::roles`), as the
/// director records them once built: configured, node ids counting from 1.
fn every_member(prepared: &Prepared) -> Vec<Vec<MemberStatus>> {
    let mut node_id = 0;
    prepared
        .resolved
        .roles()
        .map(|role| {
            let sts = prepared.statefulset(&role.spec.id);
            (0..role.members.max(0) as usize)
                .map(|ordinal| {
                    node_id += 1;
                    MemberStatus {
                        pod: names::pod(&sts, ordinal),
                        state: "configured".into(),
                        node_id,
                        ..Default::default()
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn example<T: serde::de::DeserializeOwned>(rel: &str) -> T {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(rel);
        serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse")
    }

    fn kinds(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or("")))
            .collect()
    }

    fn find<'a>(objects: &'a [Value], kind: &str, prefix: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no {kind} {prefix}* in {:?}", kinds(objects)))
    }

    #[test]
    fn spark_example_renders_every_object() {
        let app: KubeDirectorApp = example("apps/spark.yaml");
        let cluster: KubeDirectorCluster = example("clusters/spark.yaml");
        let objects = render(&app, &cluster, None).expect("render");
        // headless + controller(1) + worker(3) + jupyter(1): 3 StatefulSets, 5 member Services.
        let statefulsets = objects.iter().filter(|o| o["kind"] == "StatefulSet").count();
        let services = objects.iter().filter(|o| o["kind"] == "Service").count();
        assert_eq!((statefulsets, services), (3, 6), "{:?}", kinds(&objects));

        let controller = find(&objects, "StatefulSet", "spark-analytics-controller-");
        assert_eq!(controller["spec"]["replicas"], 1);
        assert_eq!(controller["spec"]["podManagementPolicy"], "Parallel");
        assert_eq!(controller["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "p");
        assert_eq!(controller["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "10Gi");
        let template = &controller["spec"]["template"];
        assert_eq!(template["metadata"]["labels"]["team"], "analytics", "role podLabels");
        assert_eq!(template["metadata"]["labels"]["kubedirector.hpe.com/role"], "controller");
        let container = &template["spec"]["containers"][0];
        assert_eq!(container["name"], "app");
        assert_eq!(container["image"], "docker.io/kdfed-examples/spark:3.5.1");
        assert_eq!(
            container["securityContext"]["capabilities"]["add"],
            serde_json::json!(["SYS_RESOURCE", "IPC_LOCK"])
        );
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter_map(|m| m["mountPath"].as_str())
            .collect();
        // Legacy setup layout defaults plus the app's /var/lib/spark; /etc/spark is covered by /etc.
        for dir in ["/etc", "/opt", "/usr", "/var/lib/spark", "/tmp", "/run", "/run/lock"] {
            assert!(mounts.contains(&dir), "{dir} not mounted: {mounts:?}");
        }
        assert!(!mounts.contains(&"/etc/spark"));
        let init = &template["spec"]["initContainers"][0];
        assert!(init["args"][1].as_str().is_some_and(|s| s.contains("/etc /opt /usr /var/lib/spark")), "{init}");

        let worker = find(&objects, "StatefulSet", "spark-analytics-worker-");
        assert_eq!(worker["spec"]["replicas"], 3);
        assert!(worker["spec"]["volumeClaimTemplates"].as_array().is_none_or(Vec::is_empty), "no storage, no claims");
        let env: Vec<&str> = worker["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(env, vec!["SPARK_WORKER_CORES", "NVIDIA_VISIBLE_DEVICES"]);

        let jupyter_svc = find(&objects, "Service", "s-spark-analytics-jupyter-");
        assert_eq!(jupyter_svc["spec"]["type"], "ClusterIP");
        let ports: Vec<&str> =
            jupyter_svc["spec"]["ports"].as_array().expect("ports").iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(ports, vec!["generic-ssh", "http-jupyter"]);
        let headless = find(&objects, "Service", "kdhs-");
        assert_eq!(headless["spec"]["clusterIP"], "None");
        assert_eq!(controller["spec"]["serviceName"], headless["metadata"]["name"]);
    }

    #[test]
    fn configmeta_renders_for_members_of_roles_with_a_setup_package() {
        let app: KubeDirectorApp = example("apps/cassandra.yaml");
        let cluster: KubeDirectorCluster = example("clusters/cassandra.yaml");
        let documents = render_configmeta(&app, &cluster, None).expect("render");
        let documents = documents.as_object().expect("object");
        let seeds = cluster.spec.roles.iter().find(|r| r.id == "seed").and_then(|r| r.members).unwrap_or(2) as usize;
        assert!(documents.len() >= seeds, "{:?}", documents.keys());
        let (pod, first) = documents.iter().next().expect("one");
        assert_eq!(first["node"]["hostname"], first["node"]["fqdn"]);
        assert!(first["node"]["fqdn"].as_str().is_some_and(|f| f.starts_with(pod.as_str())));
        let seed_fqdns = first["nodegroups"]["1"]["roles"]["seed"]["fqdns"].as_array().map(Vec::len);
        assert_eq!(seed_fqdns, Some(seeds));
        assert_eq!(first["distros"]["kdfed/cassandra"]["1"]["bdvlibrefkey"], serde_json::json!(["nodegroups", "1"]));
        let minimal: KubeDirectorApp = example("apps/minimal.yaml");
        let hello: KubeDirectorCluster = example("clusters/minimal.yaml");
        let none = render_configmeta(&minimal, &hello, None).expect("render");
        assert_eq!(none, serde_json::json!({}), "no setup package, no configmeta");
    }

    #[test]
    fn config_labels_and_defaults_apply() {
        let app: KubeDirectorApp = example("apps/minimal.yaml");
        let cluster: KubeDirectorCluster = example("clusters/minimal.yaml");
        let config = KubeDirectorConfigSpec {
            default_service_type: Some("NodePort".into()),
            pod_labels: Some([("cost-center".to_string(), "42".to_string())].into()),
            service_annotations: Some([("example.com/lb".to_string(), "internal".to_string())].into()),
            ..KubeDirectorConfigSpec::default()
        };
        let objects = render(&app, &cluster, Some(&config)).expect("render");
        let sts = find(&objects, "StatefulSet", "kdss-");
        assert_eq!(sts["spec"]["replicas"], 2);
        assert_eq!(sts["spec"]["template"]["metadata"]["labels"]["cost-center"], "42");
        assert!(sts["spec"]["template"]["spec"]["initContainers"].is_null(), "no storage, no init container");
        let svc = find(&objects, "Service", "s-kdss-");
        assert_eq!(svc["spec"]["type"], "NodePort");
        assert_eq!(svc["metadata"]["annotations"]["example.com/lb"], "internal");
        assert_eq!(svc["spec"]["ports"][0]["name"], "http-web");
    }

    #[test]
    fn invalid_clusters_render_their_errors() {
        let app: KubeDirectorApp = example("apps/cassandra.yaml");
        let mut cluster: KubeDirectorCluster = example("clusters/cassandra.yaml");
        cluster.spec.roles[0].members = Some(1);
        let err = render(&app, &cluster, None).expect_err("must fail").to_string();
        assert!(
            err.contains("spec.roles[0].members: Invalid member count for role(seed). Specified member count:1 Role cardinality:2+"),
            "{err}"
        );
        let other: KubeDirectorApp = example("apps/minimal.yaml");
        let err = render(&other, &cluster, None).expect_err("app mismatch").to_string();
        assert!(err.starts_with("spec.app:"), "{err}");
    }

    #[test]
    fn persist_dirs_drop_covered_and_duplicate_directories() {
        use kdfed_crds::app::{NodeRole, SetupPackageUrl};
        let mut role = NodeRole {
            persist_dirs: Some(vec!["/etc/app".into(), "/data".into(), "/data/sub".into()]),
            ..Default::default()
        };
        role.config_package = Some(None);
        assert_eq!(build::persist_dirs(&role), vec!["/etc", "/data"]);
        role.config_package = Some(Some(SetupPackageUrl { package_url: "x".into(), use_new_setup_layout: Some(true) }));
        role.persist_dirs = Some(vec!["/opt".into()]);
        // /opt covers /opt/guestconfig and /opt/guestconfig.backup.
        assert_eq!(
            build::persist_dirs(&role),
            vec!["/etc", "/var/log/guestconfig", "/usr/local/bin", "/usr/local/lib", "/opt"]
        );
    }
}

#[cfg(test)]
#[path = "testdata/golden.rs"]
mod golden;
