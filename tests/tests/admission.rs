//! The admission webhook through a real API server: bad manifests are rejected with a
//! message naming the field and the rule, and the serving certificate rotates without a
//! restart. Served by `kdfed-hub` on the hub and by `kdfed-spoke --standalone`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kdfed_crds::federation::KubeDirectorMember;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::{Daemon, Testbed, certs, workspace_binary};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn example(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(rel);
    serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse")
}

fn free_port() -> u16 {
    kdfed_testbed::free_port().expect("free port")
}

/// A running webhook: the process, its webhook port and its admin (metrics) port.
struct Webhook {
    daemon: Daemon,
    port: u16,
    admin: u16,
}

/// Starts `binary` with a webhook on a free port and waits until the API server uses it;
/// it acts as the cluster's admin, or as the identity in `kubeconfig`.
async fn with_webhook(
    bed: &Testbed,
    cluster: &str,
    binary: &str,
    kubeconfig: Option<&Path>,
    extra: &[&str],
) -> Webhook {
    let c = bed.cluster(cluster);
    let files = certs::webhook_cert(&c.dir.join("pki"), "webhook").expect("webhook cert");
    let port = free_port();
    let admin = free_port();
    let mut args: Vec<String> = vec![
        "--kubeconfig".into(),
        kubeconfig.unwrap_or(&c.kubeconfig).display().to_string(),
        "--admin-address".into(),
        format!("127.0.0.1:{admin}"),
    ];
    args.extend(certs::webhook_flags(port, &files, &format!("https://127.0.0.1:{port}")));
    args.extend(extra.iter().map(|s| s.to_string()));
    let daemon = Daemon::start(binary, &workspace_binary(binary).expect("binary"), &args, &c.dir).expect("start");
    // Registered once the configuration exists and a bad object is refused.
    let client = bed.client(cluster).await.expect("client");
    let hooks: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while hooks.get_opt(&format!("{binary}.kubedirector.hpe.com")).await.expect("get").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "webhook not registered; see {}", daemon.log.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Webhook { daemon, port, admin }
}

/// The value of one series in the process's `/metrics` (0 when absent).
fn metric(admin: u16, series: &str) -> f64 {
    let out = Command::new("curl").args(["-fsS", &format!("http://127.0.0.1:{admin}/metrics")]).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().expect("number"))
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

async fn setup(client: &Client) {
    kdfed_common::crds::install(client.clone()).await.expect("CRDs");
    let apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "default");
    for rel in ["apps/cassandra.yaml", "apps/minimal.yaml"] {
        apps.create(&PostParams::default(), &serde_json::from_value(example(rel)).expect("app"))
            .await
            .expect("create app");
    }
}

fn serial(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn the_hub_rejects_bad_manifests_and_rotates_its_certificate() {
    let bed = Testbed::start(&["hub"]).await.expect("test bed");
    let client = bed.client("hub").await.expect("client");
    setup(&client).await;
    let hook = with_webhook(&bed, "hub", "kdfed-hub", None, &[]).await;
    let port = hook.port;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");

    // Cardinality against the catalog, in upstream's words, with field and rule.
    let mut bad = example("clusters/cassandra.yaml");
    bad["spec"]["roles"][0]["members"] = json!(1);
    let message = denied(clusters.create(&PostParams::default(), &serde_json::from_value(bad).expect("c")).await);
    assert!(
        message.contains("spec.roles[0].members: Invalid member count for role(seed). Specified member count:1 Role cardinality:2+ (rule: cardinality)"),
        "{message}"
    );
    // An app that is not in the catalog.
    let mut orphan = example("clusters/minimal.yaml");
    orphan["spec"]["app"] = json!("nope");
    let message = denied(clusters.create(&PostParams::default(), &serde_json::from_value(orphan).expect("c")).await);
    assert!(
        message.contains("spec.app: Invalid app(nope). This app resource ID has not been registered."),
        "{message}"
    );
    // A good one passes, and its spec changes are checked too.
    clusters
        .create(&PostParams::default(), &serde_json::from_value(example("clusters/minimal.yaml")).expect("c"))
        .await
        .expect("valid cluster");
    let patch = Patch::Json::<()>(
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/roles/0/members", "value": 0}])).expect("p"),
    );
    let message = denied(clusters.patch("hello", &PatchParams::default(), &patch).await);
    assert!(message.contains("Role cardinality:1+"), "{message}");
    // Mounted Secrets must exist (upstream's rule and wording).
    let mut secretless = example("clusters/minimal.yaml");
    secretless["metadata"]["name"] = json!("secretless");
    secretless["spec"]["defaultSecret"] = json!({"name": "missing-creds", "mountPath": "/etc/creds"});
    let message =
        denied(clusters.create(&PostParams::default(), &serde_json::from_value(secretless).expect("c")).await);
    assert!(
        message.contains("spec.defaultSecret.name: Unable to find defaultSecret(missing-creds) in namespace(default). (rule: secret-exists)"),
        "{message}"
    );
    // An app in use cannot be deleted (upstream's rule).
    let apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "default");
    let message = denied(apps.delete("minimal", &DeleteParams::default()).await);
    assert!(message.contains("referenced by the following KubeDirectorCluster resources: default/hello"), "{message}");
    // An invalid app definition.
    let mut bad_app = example("apps/minimal.yaml");
    bad_app["metadata"]["name"] = json!("broken");
    bad_app["spec"]["services"][0]["endpoint"] = json!({"port": 80, "isDashboard": true});
    let message = denied(apps.create(&PostParams::default(), &serde_json::from_value(bad_app).expect("a")).await);
    assert!(message.contains("spec.services[0].endpoint.urlScheme"), "{message}");
    // Members: taint effects.
    let members: Api<KubeDirectorMember> = Api::all(client.clone());
    let member = json!({"apiVersion": "federation.kubedirector.hpe.com/v1alpha1", "kind": "KubeDirectorMember",
        "metadata": {"name": "edge"}, "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}});
    let message = denied(members.create(&PostParams::default(), &serde_json::from_value(member).expect("m")).await);
    assert!(message.contains("spec.taints[0].effect"), "{message}");

    // Secret keys: a config gets a generated master key; values are stored encrypted with it;
    // re-applying the same value changes nothing; a hand-made ciphertext is refused.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    // The hub creates its system namespace for its leader Lease; create it if it has not yet.
    let ns = serde_json::from_value(json!({"metadata": {"name": "kdfed-system"}})).expect("ns");
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("namespace: {e}"),
    }
    let configs: Api<kdfed_crds::KubeDirectorConfig> = Api::namespaced(client.clone(), "kdfed-system");
    let config = json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorConfig",
        "metadata": {"name": "kd-global-config"}, "spec": {"defaultServiceType": "ClusterIP"}});
    let stored =
        configs.create(&PostParams::default(), &serde_json::from_value(config).expect("cfg")).await.expect("config");
    let master = stored.spec.master_encryption_key.clone().expect("a generated master key");
    assert_eq!(master.len(), 64);
    let mut secretive = example("clusters/minimal.yaml");
    secretive["metadata"]["name"] = json!("secretive");
    secretive["spec"]["roles"][0]["secretKeys"] = json!([{"name": "db-password", "value": "hunter2"}]);
    let created = clusters
        .create(&PostParams::default(), &serde_json::from_value(secretive.clone()).expect("c"))
        .await
        .expect("create");
    let key = &created.spec.roles[0].secret_keys[0];
    assert_eq!(key.value, None, "never stored in the clear");
    let sealed = key.encrypted_value.clone().expect("encrypted");
    assert_eq!(kdfed_common::secretkeys::decrypt(&master, &sealed).expect("decrypt"), "hunter2");
    let again = Patch::Merge(json!({"spec": {"roles": secretive["spec"]["roles"].clone()}}));
    let updated = clusters.patch("secretive", &PatchParams::default(), &again).await.expect("re-apply");
    assert_eq!(updated.metadata.generation, created.metadata.generation, "same value, same stored spec");
    let mut forged = secretive.clone();
    forged["metadata"]["name"] = json!("forged");
    forged["spec"]["roles"][0]["secretKeys"] = json!([{"name": "db-password", "encryptedValue": sealed}]);
    let message = denied(clusters.create(&PostParams::default(), &serde_json::from_value(forged).expect("c")).await);
    assert!(message.contains("manually setting secret key (db-password) encrypted value is forbidden"), "{message}");

    // A type error is refused naming its field (the mutating webhook sees it before the API
    // server's schema validation does).
    let raw: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &kube::api::ApiResource::erase::<KubeDirectorCluster>(&()));
    let mut typo = example("clusters/minimal.yaml");
    typo["metadata"]["name"] = json!("typo");
    typo["spec"]["roles"][0]["members"] = json!("seven");
    let message = denied(raw.create(&PostParams::default(), &serde_json::from_value(typo).expect("c")).await);
    assert!(message.contains("spec.roles[0].members: malformed object: invalid type: string \"seven\""), "{message}");
    assert!(message.contains("(rule: type)"), "{message}");
    // Quantities and storage classes the member's API server would refuse later.
    let mut negative = example("clusters/minimal.yaml");
    negative["metadata"]["name"] = json!("negative");
    negative["spec"]["roles"][0]["resources"] = json!({"limits": {"memory": "-5Gi"}});
    negative["spec"]["roles"][0]["storage"] = json!({"size": "1Gi", "storageClassName": "Fast_SSD"});
    let message = denied(clusters.create(&PostParams::default(), &serde_json::from_value(negative).expect("c")).await);
    assert!(
        message.contains("spec.roles[0].resources.limits[memory]: Invalid value: \"-5Gi\": must be greater than or equal to 0 (rule: non-negative)"),
        "{message}"
    );
    assert!(message.contains("spec.roles[0].storage.storageClassName: StorageClass name(Fast_SSD)"), "{message}");
    // A setup package URL outside upstream's CRD pattern: the CRD's schema (upstream's
    // pattern) answers before the webhook would.
    let mut ftp_app = example("apps/minimal.yaml");
    ftp_app["metadata"]["name"] = json!("ftp");
    ftp_app["spec"]["defaultConfigPackage"] = json!({"packageURL": "ftp://example.invalid/setup.tgz"});
    match apps.create(&PostParams::default(), &serde_json::from_value(ftp_app).expect("a")).await {
        Err(kube::Error::Api(e)) => assert!(
            e.message.contains("spec.defaultConfigPackage.packageURL")
                && e.message.contains(r"^(file|https?)://.+\.tgz$"),
            "{}",
            e.message
        ),
        other => panic!("an ftp:// package URL was accepted: {other:?}"),
    }

    // Rotate the serving certificate in place: new connections get the new one, no restart.
    let before = serial(port);
    assert!(before.starts_with("serial="), "{before}");
    certs::webhook_cert(&bed.cluster("hub").dir.join("pki"), "webhook").expect("rotate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = serial(port);
        if now.starts_with("serial=") && now != before {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "certificate not rotated: {before} → {now}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut bad = example("clusters/cassandra.yaml");
    bad["spec"]["roles"][0]["members"] = json!(1);
    denied(clusters.create(&PostParams::default(), &serde_json::from_value(bad).expect("c")).await);

    // The hub counted what it answered and what it sent to its API server.
    let rejected = |labels: &str| metric(hook.admin, &format!("kdfed_hub_webhook_rejections_total{{{labels}}}"));
    let served = |labels: &str| metric(hook.admin, &format!("kdfed_hub_webhook_requests_total{{{labels}}}"));
    let cluster_creates = r#"webhook="validate",kind="KubeDirectorCluster",operation="CREATE""#;
    assert!(rejected(cluster_creates) >= 4.0, "cardinality, unknown app, missing Secret, after rotation");
    assert!(served(cluster_creates) > rejected(cluster_creates), "the valid clusters were served too");
    assert!(rejected(r#"webhook="validate",kind="KubeDirectorCluster",operation="UPDATE""#) >= 1.0);
    assert!(rejected(r#"webhook="validate",kind="KubeDirectorApp",operation="DELETE""#) >= 1.0);
    assert!(rejected(r#"webhook="validate",kind="KubeDirectorMember",operation="CREATE""#) >= 1.0);
    assert!(served(r#"webhook="mutate",kind="KubeDirectorConfig",operation="CREATE""#) >= 1.0);
    assert!(metric(hook.admin, r#"kdfed_hub_webhook_duration_seconds_count{webhook="validate"}"#) >= 8.0);
    assert!(metric(hook.admin, r#"kdfed_hub_api_requests_total{server="hub",verb="GET",code="2xx"}"#) >= 1.0);
    assert!(metric(hook.admin, r#"kdfed_hub_api_requests_total{server="hub",verb="WATCH",code="2xx"}"#) >= 1.0);
}

#[tokio::test]
async fn the_standalone_director_rejects_a_cardinality_violation() {
    let bed = Testbed::start(&["east"]).await.expect("test bed");
    let client = bed.client("east").await.expect("client");
    setup(&client).await;
    // As deploy/standalone runs it: its ServiceAccount with exactly that base's RBAC.
    let identity = bed.cluster("east").dir.join("standalone-sa.kubeconfig");
    let base = kdfed_testbed::rbac::deploy_base("standalone");
    kdfed_testbed::rbac::deploy_identity(&bed.cluster("east").kubeconfig, &base, 3600, &identity)
        .await
        .expect("deploy/standalone identity");
    let hook = with_webhook(&bed, "east", "kdfed-spoke", Some(&identity), &["--standalone"]).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    clusters
        .create(&PostParams::default(), &serde_json::from_value(example("clusters/minimal.yaml")).expect("c"))
        .await
        .expect("create");
    let patch = Patch::Json::<()>(
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/roles/0/members", "value": 0}])).expect("p"),
    );
    let message = denied(clusters.patch("hello", &PatchParams::default(), &patch).await);
    assert!(
        message.contains("spec.roles[0].members: Invalid member count for role(web). Specified member count:0 Role cardinality:1+ (rule: cardinality)"),
        "{message}"
    );
    let labels = r#"webhook="validate",kind="KubeDirectorCluster",operation="UPDATE""#;
    assert!(metric(hook.admin, &format!("kdfed_spoke_webhook_rejections_total{{{labels}}}")) >= 1.0);
    assert!(metric(hook.admin, r#"kdfed_spoke_api_requests_total{server="local",verb="GET",code="2xx"}"#) >= 1.0);
    // The director builds the cluster with that identity, and nothing it did was forbidden.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let state = clusters.get("hello").await.expect("get").status.and_then(|s| s.state);
        if state.as_deref() == Some("configured") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hello not configured ({state:?}); see {}",
            hook.daemon.log.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = std::fs::read_to_string(&hook.daemon.log).expect("log");
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("forbidden")).collect();
    assert!(refused.is_empty(), "deploy/standalone's RBAC refused calls:\n{}", refused.join("\n"));
}

/// A manifest of the compatibility corpus (`tests/compat/`), as written.
fn corpus(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat").join(rel);
    serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse")
}

/// Every document of a corpus file converted by `kdfed convert`'s function.
fn converted(rel: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat").join(rel);
    let text = kdfed_crds::convert::convert_yaml(&std::fs::read_to_string(path).expect("read")).expect("convert");
    serde_saphyr::from_multiple(&text).expect("converted YAML")
}

/// The API of `kind`, sending objects exactly as written (nulls included).
fn raw<K: kube::Resource<DynamicType = ()>>(client: &Client, namespace: &str) -> Api<kube::api::DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kube::api::ApiResource::erase::<K>(&()))
}

fn object(value: Value) -> kube::api::DynamicObject {
    serde_json::from_value(value).expect("object")
}

/// The API server's or the webhook's refusal.
fn refused(result: Result<kube::api::DynamicObject, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(e)) => e.message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn the_hub_admits_upstream_shaped_manifests_as_written_and_refuses_what_upstream_refuses() {
    let bed = Testbed::start(&["hub"]).await.expect("test bed");
    let client = bed.client("hub").await.expect("client");
    kdfed_common::crds::install(client.clone()).await.expect("CRDs");
    let _hook = with_webhook(&bed, "hub", "kdfed-hub", None, &[]).await;
    let apps = raw::<KubeDirectorApp>(&client, "default");
    let clusters = raw::<KubeDirectorCluster>(&client, "default");
    // What the fullest cluster refers to exists (the webhook checks mounted Secrets).
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "default");
    for name in ["rest-default", "rest-lb", "rest-credentials"] {
        let secret = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"k": "v"}})).expect("s");
        secrets.create(&PostParams::default(), &secret).await.expect("secret");
    }

    // A config, so that secret keys (the fullest cluster has one) are stored encrypted.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": "kdfed-system"}})).expect("ns");
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("namespace: {e}"),
    }
    let configs = raw::<kdfed_crds::KubeDirectorConfig>(&client, "kdfed-system");
    let config = json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorConfig",
        "metadata": {"name": "kd-global-config"}, "spec": {"defaultStorageClassName": null, "podLabels": null}});
    configs.create(&PostParams::default(), &object(config)).await.expect("config with nulls");

    // Accepted as written: JSON with tabs, comments, every optional block, nulls, role ids
    // with capitals, underscores and dots, and the converted v1alpha1 forms.
    for rel in ["apps/centos.json", "apps/restserver.yaml", "apps/bare.yaml", "apps/nulls.yaml"] {
        apps.create(&PostParams::default(), &object(corpus(rel))).await.unwrap_or_else(|e| panic!("{rel}: {e}"));
    }
    for rel in ["clusters/centos.json", "clusters/restserver.yaml", "clusters/bare.yaml", "clusters/nulls.yaml"] {
        let created = clusters
            .create(&PostParams::default(), &object(corpus(rel)))
            .await
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        // What the API server stored reads as kdfed's type, as the director will read it.
        let typed: KubeDirectorCluster = serde_json::from_value(serde_json::to_value(&created).expect("json"))
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(!typed.spec.roles.is_empty(), "{rel}");
    }
    let typed_clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    let rest = typed_clusters.get("rest").await.expect("get");
    let key = &rest.spec.roles[0].secret_keys[0];
    assert!(key.value.is_none() && key.encrypted_value.is_some(), "the secret key is stored encrypted: {key:?}");
    let stored = typed_clusters.get("centos-compat").await.expect("get");
    assert_eq!(stored.spec.roles[0].id, "vanilla_centos");
    assert!(stored.spec.connections.unwrap_or_default().secrets.is_empty(), "secrets: null reads as none");
    let stored_app: KubeDirectorApp =
        Api::namespaced(client.clone(), "default").get("nulls-compat").await.expect("get");
    assert_eq!(stored_app.spec.default_config_package, Some(None), "an explicit null setup package is kept");
    for doc in converted("v1alpha1/centos.yaml") {
        let api = if doc["kind"] == "KubeDirectorApp" { &apps } else { &clusters };
        api.create(&PostParams::default(), &object(doc)).await.expect("converted v1alpha1 manifest");
    }

    // Refused, as upstream refuses them, naming the field.
    let app_with = |name: &str, path: &str, value: Value| {
        let mut app = corpus("apps/bare.yaml");
        app["metadata"]["name"] = json!(name);
        *app.pointer_mut(path).expect("path") = value;
        object(app)
    };
    let cases = [
        (app_with("bad-role", "/spec/roles/0/id", json!("_Node")), "spec.roles[0].id"),
        (app_with("bad-version", "/spec/configSchemaVersion", json!(6)), "spec.configSchemaVersion"),
        (app_with("bad-distro", "/spec/distroID", json!("")), "spec.distroID"),
        (app_with(&"a".repeat(64), "/spec/version", json!("1")), "metadata.name"),
    ];
    for (app, field) in cases {
        let message = refused(apps.create(&PostParams::default(), &app).await);
        assert!(message.contains(field), "{field}: {message}");
    }
    let mut long_service = corpus("apps/centos.json");
    long_service["metadata"]["name"] = json!("long-service");
    long_service["spec"]["services"][0]["id"] = json!("ssh-and-more-ssh");
    long_service["spec"]["config"]["roleServices"][0]["serviceIDs"] = json!(["ssh-and-more-ssh"]);
    let message = refused(apps.create(&PostParams::default(), &object(long_service)).await);
    assert!(message.contains("spec.services[0].id"), "{message}");
    let mut bad_mode = corpus("clusters/bare.yaml");
    bad_mode["metadata"]["name"] = json!("bad-mode");
    bad_mode["spec"]["defaultSecret"] = json!({"name": "rest-default", "mountPath": "/etc/s", "defaultMode": 512});
    let message = refused(clusters.create(&PostParams::default(), &object(bad_mode)).await);
    assert!(message.contains("spec.defaultSecret.defaultMode"), "{message}");
    let mut ftp = corpus("clusters/bare.yaml");
    ftp["metadata"]["name"] = json!("ftp-injection");
    ftp["spec"]["roles"][0]["fileInjections"] = json!([{"srcURL": "ftp://example.invalid/f", "destDir": "/etc"}]);
    let message = refused(clusters.create(&PostParams::default(), &object(ftp)).await);
    assert!(message.contains("spec.roles[0].fileInjections[0].srcURL"), "{message}");
    let config = json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorConfig",
        "metadata": {"name": "my-config"}, "spec": {}});
    let message = refused(configs.create(&PostParams::default(), &object(config)).await);
    assert!(message.contains("metadata.name") && message.contains("kd-global-config"), "{message}");
}

/// Creates namespace `name` unless it exists (the hub creates its system namespace itself
/// for its leader Lease, maybe first).
async fn ensure_namespace(client: &Client, name: &str) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("namespace {name}: {e}"),
    }
}

#[tokio::test]
async fn the_hub_decides_on_what_it_reads_from_its_api_server() {
    let bed = Testbed::start(&["hub"]).await.expect("test bed");
    let client = bed.client("hub").await.expect("client");
    setup(&client).await;
    let _hook = with_webhook(&bed, "hub", "kdfed-hub", None, &[]).await;
    ensure_namespace(&client, "kdfed-system").await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    let create = |value: Value| {
        let clusters = clusters.clone();
        async move { clusters.create(&PostParams::default(), &serde_json::from_value(value).expect("c")).await }
    };
    let named = |name: &str| {
        let mut c = example("clusters/minimal.yaml");
        c["metadata"]["name"] = json!(name);
        c
    };

    // No KubeDirectorConfig yet, so no master key: a secret value cannot be stored.
    let mut secretive = named("secretive");
    secretive["spec"]["roles"][0]["secretKeys"] = json!([{"name": "db-password", "value": "hunter2"}]);
    let message = denied(create(secretive).await);
    assert!(
        message.contains("spec.roles[0].secretKeys[0]: cannot encrypt secret key db-password: no masterEncryptionKey in KubeDirectorConfig kdfed-system/kd-global-config (rule: secret-key-encryption)"),
        "{message}"
    );

    // A role's Secret is looked up in the cluster's namespace: refused while missing,
    // admitted once it exists.
    let mut mounting = named("mounting");
    mounting["spec"]["roles"][0]["secret"] = json!({"name": "role-creds", "mountPath": "/etc/r"});
    let message = denied(create(mounting.clone()).await);
    assert!(
        message.contains("spec.roles[0].secret.name: Unable to find secret(role-creds) for role(web) in namespace(default). (rule: secret-exists)"),
        "{message}"
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "default");
    let secret = serde_json::from_value(json!({"metadata": {"name": "role-creds"}, "stringData": {"k": "v"}}));
    secrets.create(&PostParams::default(), &secret.expect("s")).await.expect("secret");
    create(mounting).await.expect("its Secret exists now");

    // An app of the system catalog serves clusters of any namespace, and cannot go while
    // one uses it; an app nobody uses can.
    let mut system_app = example("apps/minimal.yaml");
    system_app["metadata"]["name"] = json!("system-web");
    let system_apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "kdfed-system");
    system_apps.create(&PostParams::default(), &serde_json::from_value(system_app).expect("a")).await.expect("app");
    let mut catalogued = named("catalogued");
    catalogued["spec"]["app"] = json!("system-web");
    create(catalogued).await.expect("the system catalog's app");
    let message = denied(system_apps.delete("system-web", &DeleteParams::default()).await);
    assert!(
        message.contains("referenced by the following KubeDirectorCluster resources: default/catalogued"),
        "{message}"
    );
    let apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "default");
    apps.delete("cassandra", &DeleteParams::default()).await.expect("an unused app goes");

    // The config's required Secret prefix is read too.
    let configs: Api<kdfed_crds::KubeDirectorConfig> = Api::namespaced(client.clone(), "kdfed-system");
    let config = json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorConfig",
        "metadata": {"name": "kd-global-config"}, "spec": {"requiredSecretPrefix": "role-"}});
    configs.create(&PostParams::default(), &serde_json::from_value(config).expect("cfg")).await.expect("config");
    let mut unprefixed = named("unprefixed");
    unprefixed["spec"]["defaultSecret"] = json!({"name": "creds", "mountPath": "/etc/creds"});
    let message = denied(create(unprefixed).await);
    assert!(
        message.contains("spec.defaultSecret.name: defaultSecret(creds) does not have the required name prefix(role-). (rule: secret-prefix)"),
        "{message}"
    );
}
