//! Config choices refused where bad input is refused: the hub's webhook and the spoke's
//! (`kdfed-spoke --standalone`) through real API servers, and `kdfed validate` offline —
//! each naming the field, the rule and the allowed values; a fixed choice cannot change on
//! a running cluster, a mutable one can. Across the fleet, the Work carries the choices:
//! the member builds the chosen config, the hub shows the choices in effect, and a mutable
//! choice changed on the hub re-renders the member's Services. Needs `cargo build --bins`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::{Daemon, Testbed, certs, workspace_binary};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

mod support;

fn example(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(rel);
    serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse")
}

/// Starts `binary` (with `extra` arguments) serving its webhook and waits until the API
/// server of `cluster` has it registered.
async fn with_webhook(bed: &Testbed, cluster: &str, binary: &str, extra: &[&str]) -> Daemon {
    let c = bed.cluster(cluster);
    let files = certs::webhook_cert(&c.dir.join("pki"), "webhook").expect("webhook cert");
    let port = kdfed_testbed::free_port().expect("port");
    let admin = kdfed_testbed::free_port().expect("port");
    let mut args: Vec<String> = vec![
        "--kubeconfig".into(),
        c.kubeconfig.display().to_string(),
        "--admin-address".into(),
        format!("127.0.0.1:{admin}"),
    ];
    args.extend(certs::webhook_flags(port, &files, &format!("https://127.0.0.1:{port}")));
    args.extend(extra.iter().map(|s| s.to_string()));
    let daemon = Daemon::start(binary, &workspace_binary(binary).expect("binary"), &args, &c.dir).expect("start");
    let client = bed.client(cluster).await.expect("client");
    let hooks: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> = Api::all(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while hooks.get_opt(&format!("{binary}.kubedirector.hpe.com")).await.expect("get").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "webhook not registered; see {}", daemon.log.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon
}

fn denied(result: Result<impl std::fmt::Debug, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(e)) => {
            assert!(e.message.contains("denied the request"), "not a webhook denial: {}", e.message);
            e.message
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// The example cluster (jupyter=false) with `change` made to its manifest.
fn batch(change: impl FnOnce(&mut Value)) -> KubeDirectorCluster {
    let mut manifest = example("clusters/spark-notebook.yaml");
    change(&mut manifest);
    serde_json::from_value(manifest).expect("cluster")
}

/// What both webhooks must refuse and allow, against the API server of `client`.
async fn choices_are_checked(client: &Client) {
    let apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "default");
    let app = serde_json::from_value(example("apps/spark-notebook.yaml")).expect("app");
    apps.create(&PostParams::default(), &app).await.expect("create app");
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    let message =
        denied(clusters.create(&pp, &batch(|m| m["spec"]["configChoices"]["jupyter"] = json!("maybe"))).await);
    assert!(message.contains("spec.configChoices[jupyter]: Invalid value(maybe) of choice(jupyter) for app(spark-notebook). Valid values: \"true,false\" (rule: choice-value)"), "{message}");
    let message = denied(clusters.create(&pp, &batch(|m| m["spec"]["configChoices"]["color"] = json!("red"))).await);
    assert!(message.contains("spec.configChoices[color]: Invalid choice(color) for app(spark-notebook). Valid choices: \"jupyter,logLevel\" (rule: known-choice)"), "{message}");
    let with_notebook = |m: &mut Value| {
        m["spec"]["roles"].as_array_mut().expect("roles").push(json!({"id": "jupyter", "members": 1}));
    };
    let message = denied(clusters.create(&pp, &batch(with_notebook)).await);
    assert!(message.contains("spec.roles[2].members: Role(jupyter) is not selected by the config of choices(jupyter=false,logLevel=INFO) and cannot have members. Selected roles: \"controller,worker\" (rule: role-not-selected)"), "{message}");

    clusters.create(&pp, &batch(|_| {})).await.expect("the example is valid");
    // Changes are checked against a status (an unprocessed change is refused first).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while clusters.get("spark-batch").await.expect("get").status.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no status written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let change = |id: &str, value: &str| Patch::Merge(json!({"spec": {"configChoices": {id: value}}}));
    // The notebook asked for with its role (else the missing role is what is refused).
    let mut roles = example("clusters/spark-notebook.yaml")["spec"]["roles"].clone();
    roles.as_array_mut().expect("roles").push(json!({"id": "jupyter"}));
    let notebook = Patch::Merge(json!({"spec": {"configChoices": {"jupyter": "true"}, "roles": roles}}));
    let message = denied(clusters.patch("spark-batch", &PatchParams::default(), &notebook).await);
    assert!(message.contains("spec.configChoices[jupyter]: Choice(jupyter) is fixed once the cluster is created (it was false). Choices that may change: \"logLevel\" (rule: choice-immutable)"), "{message}");
    let changed = clusters.patch("spark-batch", &PatchParams::default(), &change("logLevel", "DEBUG")).await;
    let spec = changed.expect("a mutable choice changes").spec;
    assert_eq!(spec.config_choices.get("logLevel").map(String::as_str), Some("DEBUG"));
}

#[tokio::test]
async fn the_hub_and_spoke_webhooks_refuse_bad_choices_naming_the_allowed_values() {
    let bed = Testbed::start(&["hub", "east"]).await.expect("test bed");
    for (cluster, binary, extra) in [("hub", "kdfed-hub", &[][..]), ("east", "kdfed-spoke", &["--standalone"][..])] {
        let client = bed.client(cluster).await.expect("client");
        kdfed_common::crds::install(client.clone()).await.expect("CRDs");
        let _hook = with_webhook(&bed, cluster, binary, extra).await;
        choices_are_checked(&client).await;
    }
}

#[test]
fn kdfed_validate_refuses_bad_choices_offline_and_the_examples_pass() {
    let kdfed = workspace_binary("kdfed").expect("kdfed binary");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let ok = Command::new(&kdfed)
        .args(["validate", "-f"])
        .arg(examples.join("apps"))
        .arg("-f")
        .arg(examples.join("clusters"))
        .output()
        .expect("run");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = batch(|m| m["spec"]["configChoices"]["jupyter"] = json!("maybe"));
    std::fs::write(dir.path().join("bad.yaml"), serde_saphyr::to_string(&bad).expect("yaml")).expect("write");
    let out = Command::new(&kdfed)
        .args(["validate", "-f"])
        .arg(examples.join("apps/spark-notebook.yaml"))
        .arg("-f")
        .arg(dir.path().join("bad.yaml"))
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("kubedirectorcluster/spark-batch: spec.configChoices[jupyter]: Invalid value(maybe) of choice(jupyter) for app(spark-notebook). Valid values: \"true,false\" (rule: choice-value)"), "{stdout}");
}

/// An app without a setup package: `tier` (mutable) adds the controller's metrics service at
/// `large`; `extra` (fixed, default false) selects the `extra` role.
fn tiered_app() -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": "tiered", "namespace": "default"},
        "spec": {
            "label": {"name": "Tiered"}, "distroID": "test/tiered", "version": "1", "configSchemaVersion": 8,
            "defaultImageRepoTag": "example/tiered:1", "defaultConfigPackage": null,
            "services": [{"id": "ui", "endpoint": {"port": 8080}}, {"id": "metrics", "endpoint": {"port": 9090}}],
            "roles": [{"id": "controller", "cardinality": "1"}, {"id": "extra", "cardinality": "1"}],
            "configChoices": [
                {"id": "tier", "label": {"name": "Tier"}, "values": ["small", "large"], "mutable": true},
                {"id": "extra", "label": {"name": "Extra role"}, "values": ["false", "true"]}
            ],
            "config": {
                "selectedRoles": ["controller"],
                "roleServices": [{"roleID": "controller", "serviceIDs": ["ui"]}],
                "conditional": [
                    {"when": {"tier": "large"}, "roleServices": [{"roleID": "controller", "serviceIDs": ["metrics"]}]},
                    {"when": {"extra": "true"}, "selectedRoles": ["extra"]}
                ]
            }
        }
    })
}

#[tokio::test]
async fn across_the_fleet_the_work_carries_the_choices_and_a_mutable_change_reaches_the_member() {
    let fleet = support::fleet().await;
    let apps: Api<KubeDirectorApp> = Api::namespaced(fleet.hub.clone(), "default");
    apps.create(&PostParams::default(), &serde_json::from_value(tiered_app()).expect("app")).await.expect("app");
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(fleet.hub.clone(), "default");
    let manifest = json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": "tiers", "namespace": "default"},
        "spec": {"app": "tiered", "serviceType": "ClusterIP", "configChoices": {"tier": "large"},
            "roles": [{"id": "controller"}, {"id": "extra"}],
            "placement": {"memberSelector": {"matchLabels": {"region": "east"}}}}
    });
    clusters.create(&PostParams::default(), &serde_json::from_value(manifest).expect("c")).await.expect("create");
    let shown = |c: &KubeDirectorCluster, tier: &str| {
        support::ready_with(c, "1/1")
            && c.status.as_ref().is_some_and(|s| s.config_choices.get("tier").map(String::as_str) == Some(tier))
    };
    let c = support::wait_cluster(&clusters, "tiers", "ready with tier=large", |c| shown(c, "large")).await;
    let choices = c.status.as_ref().map(|s| s.config_choices.clone()).unwrap_or_default();
    assert_eq!(choices.get("extra").map(String::as_str), Some("false"), "defaults shown too: {choices:?}");
    let pod = c.status.as_ref().and_then(|s| s.roles.iter().find(|r| r.id == "controller")).expect("role").members[0]
        .pod
        .clone();

    let east = fleet.bed.client("east").await.expect("east");
    let local: Api<KubeDirectorCluster> = Api::namespaced(east.clone(), "default");
    let copy = local.get("tiers").await.expect("the member's copy");
    assert_eq!(copy.spec.config_choices.get("tier").map(String::as_str), Some("large"));
    let sts: Api<StatefulSet> = Api::namespaced(east.clone(), "default");
    let roles: Vec<String> = sts
        .list(&ListParams::default().labels("kubedirector.hpe.com/kdcluster=tiers"))
        .await
        .expect("statefulsets")
        .items
        .iter()
        .filter_map(|s| s.metadata.labels.as_ref()?.get("kubedirector.hpe.com/role").cloned())
        .collect();
    assert_eq!(roles, ["controller"], "the extra role is not selected");
    let services: Api<Service> = Api::namespaced(east, "default");
    let ports = |svc: Service| -> Vec<i32> {
        svc.spec.and_then(|s| s.ports).unwrap_or_default().iter().map(|p| p.port).collect()
    };
    assert_eq!(ports(services.get(&format!("s-{pod}")).await.expect("service")), [8080, 9090]);

    // The mutable choice changes on the hub: the member's Service follows, the hub shows it.
    let patch = Patch::Merge(json!({"spec": {"configChoices": {"tier": "small"}}}));
    clusters.patch("tiers", &PatchParams::default(), &patch).await.expect("change the tier");
    support::wait_cluster(&clusters, "tiers", "ready with tier=small", |c| shown(c, "small")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ports(services.get(&format!("s-{pod}")).await.expect("service")) != [8080] {
        assert!(tokio::time::Instant::now() < deadline, "the metrics port stayed on the member's Service");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
