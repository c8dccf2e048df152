//! The Helm chart deploy/helm/kdfed: it lints, renders what the kustomize bases of deploy/
//! render (so that neither changes alone), its output is accepted by a real API server, and
//! it installs, upgrades and uninstalls on a test-bed cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kdfed_testbed::Testbed;
use kube::Api;
use serde_json::Value;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chart.
fn chart() -> PathBuf {
    root().join("deploy/helm/kdfed")
}

/// helm from `tests/testbed/install.sh` (`KDFED_HELM`).
fn helm_binary() -> PathBuf {
    let env_file = kdfed_testbed::binaries::cache_dir().join("bin/env");
    let from_file = std::fs::read_to_string(&env_file)
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("KDFED_HELM=").map(|v| v.trim().to_string())));
    let path = std::env::var("KDFED_HELM").ok().or(from_file).map(PathBuf::from).unwrap_or_default();
    assert!(path.exists(), "helm not found (KDFED_HELM in {}): run tests/testbed/install.sh", env_file.display());
    path
}

/// Runs helm with its state in `home`; returns (success, stdout, stderr).
fn helm(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm_binary())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` of the chart in namespace kdfed-system with `sets`; the objects.
fn template(home: &Path, sets: &[&str], include_crds: bool) -> Vec<Value> {
    let out = template_text(home, sets, include_crds);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).expect("helm template output is YAML");
    docs.into_iter().filter(|d| !d.is_null()).map(|d| numbers_as_floats(&d)).collect()
}

/// Every number as a float, so that `7` and `7.0` (as YAML renderers differ) compare equal.
fn numbers_as_floats(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, |f| serde_json::json!(f)),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_floats).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), numbers_as_floats(v))).collect()),
        other => other.clone(),
    }
}

/// `helm template` of the chart in namespace kdfed-system with `sets`, as text.
fn template_text(home: &Path, sets: &[&str], include_crds: bool) -> String {
    let chart = chart();
    let mut args = vec!["template", "kdfed", chart.to_str().expect("path"), "-n", "kdfed-system"];
    if include_crds {
        args.push("--include-crds");
    }
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, out, err) = helm(home, &args);
    assert!(ok, "helm template {sets:?}: {err}");
    out
}

/// The sets that make each component's chart output comparable with a kustomize base.
fn components(tmp: &Path) -> Vec<(&'static str, Vec<&'static str>, PathBuf)> {
    // A federated member's spoke with its webhook: deploy/spoke plus the deploy/spoke-webhook
    // component, as an overlay would say.
    let overlay = tmp.join("spoke-with-webhook").canonicalize().unwrap_or_else(|_| {
        std::fs::create_dir_all(tmp.join("spoke-with-webhook")).expect("overlay");
        tmp.join("spoke-with-webhook").canonicalize().expect("overlay")
    });
    // kustomize wants relative paths: up to / from the overlay, then down to deploy/.
    let up = "../".repeat(overlay.components().count() - 1);
    let base = |b: &str| {
        let abs = root().join("deploy").join(b).canonicalize().expect("base");
        PathBuf::from(format!("{up}{}", abs.display().to_string().trim_start_matches('/')))
    };
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- {}\ncomponents:\n- {}\n",
            base("spoke").display(),
            base("spoke-webhook").display()
        ),
    )
    .expect("overlay");
    vec![
        ("hub", vec!["component=hub"], root().join("deploy/hub")),
        ("spoke", vec!["component=spoke", "spoke.member=member-name"], root().join("deploy/spoke")),
        ("standalone", vec!["component=standalone"], root().join("deploy/standalone")),
        ("spoke+webhook", vec!["component=spoke", "spoke.member=member-name", "spoke.webhook.enabled=true"], overlay),
        ("console", vec!["component=console"], root().join("deploy/console")),
    ]
}

/// Objects only the chart renders with default values (the generated webhook certificate):
/// kustomize users bring it (cert-manager or their own Secret).
fn chart_only(kind: &str, name: &str) -> bool {
    kind == "Secret" && name.ends_with("-webhook-tls")
}

/// `kind/name` → object.
fn by_key(objects: &[Value]) -> BTreeMap<String, Value> {
    objects
        .iter()
        .map(|o| {
            (
                format!("{}/{}", o["kind"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or("")),
                o.clone(),
            )
        })
        .collect()
}

/// What the chart and a kustomize base must agree on, object by object: kinds and names,
/// RBAC rules, bindings, webhooks (but their caBundle), admission policies, Service ports
/// and the Deployment's pod spec (but imagePullPolicy). Returns the differences.
fn differences(chart: &[Value], kustomize: &[Value]) -> Vec<String> {
    let ours = by_key(chart);
    let theirs: BTreeMap<String, Value> =
        by_key(kustomize).into_iter().filter(|(k, _)| !k.starts_with("Namespace/")).collect();
    let mut diffs = Vec::new();
    let names = |m: &BTreeMap<String, Value>| {
        m.keys()
            .filter(|k| k.split_once('/').is_none_or(|(kind, name)| !chart_only(kind, name)))
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    let (a, b) = (names(&ours), names(&theirs));
    for k in a.difference(&b) {
        diffs.push(format!("{k}: only in the chart"));
    }
    for k in b.difference(&a) {
        diffs.push(format!("{k}: only in the kustomize base"));
    }
    for (key, k) in &theirs {
        let Some(c) = ours.get(key) else { continue };
        for (what, x, y) in comparable(key, c, k) {
            if x != y {
                let short = |v: &Value| v.to_string().chars().take(400).collect::<String>();
                diffs.push(format!("{key}: {what} differs:\n  chart:     {}\n  kustomize: {}", short(&x), short(&y)));
            }
        }
    }
    diffs
}

/// The parts of an object (chart's `c`, kustomize's `k`) that must be equal.
fn comparable(key: &str, c: &Value, k: &Value) -> Vec<(&'static str, Value, Value)> {
    let kind = key.split('/').next().unwrap_or("");
    let strip_ca = |v: &Value| {
        let mut v = v.clone();
        for h in v.as_array_mut().into_iter().flatten() {
            if let Some(cc) = h["clientConfig"].as_object_mut() {
                cc.remove("caBundle");
            }
        }
        v
    };
    let pod = |v: &Value| {
        let mut p = v["spec"]["template"]["spec"].clone();
        for container in p["containers"].as_array_mut().into_iter().flatten() {
            if let Some(o) = container.as_object_mut() {
                o.remove("imagePullPolicy");
            }
        }
        p
    };
    match kind {
        "ClusterRole" | "Role" => vec![("rules", c["rules"].clone(), k["rules"].clone())],
        "ClusterRoleBinding" | "RoleBinding" => vec![
            ("roleRef", c["roleRef"].clone(), k["roleRef"].clone()),
            ("subjects", c["subjects"].clone(), k["subjects"].clone()),
        ],
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
            vec![("webhooks", strip_ca(&c["webhooks"]), strip_ca(&k["webhooks"]))]
        }
        "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding" => {
            vec![("spec", c["spec"].clone(), k["spec"].clone())]
        }
        "Service" => vec![
            ("ports", c["spec"]["ports"].clone(), k["spec"]["ports"].clone()),
            ("selector", c["spec"]["selector"].clone(), k["spec"]["selector"].clone()),
        ],
        "Deployment" => vec![
            ("replicas", c["spec"]["replicas"].clone(), k["spec"]["replicas"].clone()),
            ("strategy", c["spec"]["strategy"].clone(), k["spec"]["strategy"].clone()),
            ("selector", c["spec"]["selector"].clone(), k["spec"]["selector"].clone()),
            ("pod spec", pod(c), pod(k)),
        ],
        "CustomResourceDefinition" => vec![("spec", c["spec"].clone(), k["spec"].clone())],
        _ => vec![],
    }
}

/// The chart with default values renders, for each component, what the matching kustomize
/// base renders (CRDs included), and a change to either side alone is caught.
#[test]
fn the_chart_and_the_kustomize_bases_do_not_drift() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (component, sets, base) in components(tmp.path()) {
        // The console runs on the hub cluster, which has the CRDs (deploy/hub); its base
        // ships none and no RBAC.
        let console = component == "console";
        let chart = template(tmp.path(), &sets, !console);
        let kustomize: Vec<Value> =
            kdfed_testbed::rbac::render(&base).expect("kubectl kustomize").iter().map(numbers_as_floats).collect();
        let diffs = differences(&chart, &kustomize);
        assert!(diffs.is_empty(), "{component}: the chart and {} differ:\n{}", base.display(), diffs.join("\n"));
        let kinds: BTreeSet<&str> = chart.iter().filter_map(|o| o["kind"].as_str()).collect();
        if console {
            assert_eq!(kinds, BTreeSet::from(["Deployment", "Service", "ServiceAccount"]), "{component}");
        } else {
            assert!(
                kinds.contains("Deployment") && kinds.contains("CustomResourceDefinition"),
                "{component}: {kinds:?}"
            );
        }

        // The comparison sees a change on one side: a verb less in a role, a port moved,
        // a webhook rule narrowed, an object renamed.
        let mut changed = kustomize.clone();
        if let Some(role) = changed.iter_mut().find(|o| o["kind"] == "ClusterRole") {
            role["rules"][0]["verbs"].as_array_mut().expect("verbs").pop();
            assert!(!differences(&chart, &changed).is_empty(), "{component}: a removed verb went unnoticed");
        }
        let mut changed = kustomize.clone();
        let deployment = changed.iter_mut().find(|o| o["kind"] == "Deployment").expect("Deployment");
        deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 1.into();
        assert!(!differences(&chart, &changed).is_empty(), "{component}: a moved port went unnoticed");
        if let Some(hook) = changed.iter_mut().find(|o| o["kind"] == "ValidatingWebhookConfiguration") {
            hook["webhooks"][0]["rules"][0]["operations"] = serde_json::json!(["CREATE"]);
            assert!(!differences(&chart, &changed).is_empty(), "{component}: a narrowed webhook rule went unnoticed");
        }
        let mut renamed = chart.clone();
        renamed.iter_mut().find(|o| o["kind"] == "ServiceAccount").expect("ServiceAccount")["metadata"]["name"] =
            "renamed".into();
        assert!(!differences(&renamed, &kustomize).is_empty(), "{component}: a renamed object went unnoticed");
    }
}

/// `helm lint` passes for each component, and bad values fail rendering with a message
/// naming the value.
#[test]
fn the_chart_lints_and_refuses_bad_values() {
    let tmp = tempfile::tempdir().expect("tmp");
    let chart = chart();
    let chart = chart.to_str().expect("path");
    for sets in [
        vec!["component=hub"],
        vec!["component=spoke", "spoke.member=east", "spoke.join.kubeconfig=x"],
        vec!["component=standalone", "webhook.certificate=cert-manager"],
        vec!["component=hub", "webhook.certificate=secret", "hub.settings.heartbeat_grace_seconds=20"],
        vec!["component=console"],
    ] {
        let mut args = vec!["lint", chart, "--strict"];
        for s in &sets {
            args.extend(["--set", s]);
        }
        let (ok, out, err) = helm(tmp.path(), &args);
        assert!(ok, "helm lint {sets:?}:\n{out}{err}");
    }
    for (sets, message) in [
        (vec!["component=portal"], "component: must be hub, spoke, standalone or console, not \"portal\""),
        (vec!["component=console", "console.tls.secretName="], "console.tls.secretName: required"),
        (vec!["component=spoke"], "spoke.member: required for component=spoke"),
        (vec!["webhook.certificate=vault"], "webhook.certificate: must be generate, cert-manager or secret"),
        (vec!["logFormat=xml"], "logFormat: must be json or text, not \"xml\""),
    ] {
        let mut args = vec!["template", "kdfed", chart];
        for s in &sets {
            args.extend(["--set", s]);
        }
        let (ok, _, err) = helm(tmp.path(), &args);
        assert!(!ok && err.contains(message), "helm template {sets:?} should fail with {message:?}:\n{err}");
    }
}

/// Runs the test bed's kubectl against `kubeconfig`; (success, stdout + stderr).
fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(kdfed_testbed::rbac::kubectl().expect("kubectl"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("kubectl");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The cluster-scoped objects a chart could leave behind, as `kind/name` lines.
fn cluster_scoped(kubeconfig: &Path) -> BTreeSet<String> {
    let kinds = "clusterroles,clusterrolebindings,validatingwebhookconfigurations,mutatingwebhookconfigurations,validatingadmissionpolicies,validatingadmissionpolicybindings,customresourcedefinitions,namespaces";
    let (ok, out) = kubectl(kubeconfig, &["get", kinds, "-o", "name"], None);
    assert!(ok, "kubectl get: {out}");
    out.lines().map(str::to_string).collect()
}

/// The chart's output is accepted by a real API server for each component and certificate
/// mode the API server knows; it installs (objects created, RBAC bound, caBundle filled),
/// upgrades (new values applied, the generated certificate kept) and uninstalls, leaving
/// no cluster-scoped object behind but the CRDs.
#[tokio::test]
async fn the_chart_installs_upgrades_and_uninstalls_on_a_real_cluster() {
    let bed = Testbed::start(&["hub", "member"]).await.expect("test bed");
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path();
    let hub_config = bed.cluster("hub").kubeconfig.clone();
    let member_config = bed.cluster("member").kubeconfig.clone();

    // Dry run on the API server (the namespace exists, as with --create-namespace).
    let (ok, out) = kubectl(&member_config, &["create", "namespace", "kdfed-system"], None);
    assert!(ok, "{out}");
    for sets in [
        vec!["component=hub"],
        vec![
            "component=hub",
            "webhook.certificate=secret",
            "hub.settings.log_level=debug",
            "extraLabels.team=platform",
        ],
        vec!["component=spoke", "spoke.member=east", "spoke.join.kubeconfig=apiVersion: v1"],
        vec!["component=spoke", "spoke.member=east", "spoke.webhook.enabled=true"],
        vec!["component=standalone"],
        vec!["component=console"],
    ] {
        let file = home.join("rendered.yaml");
        std::fs::write(&file, template_text(home, &sets, true)).expect("write");
        let (ok, out) =
            kubectl(&member_config, &["apply", "--dry-run=server", "-f", file.to_str().expect("path")], None);
        assert!(ok, "{sets:?}: the API server refused the chart's output:\n{out}");
        assert!(out.contains("deployment.apps/kdfed-") && out.contains("(server dry run)"), "{sets:?}: {out}");
    }

    // Install the hub.
    let before = cluster_scoped(&hub_config);
    let chart = chart();
    let chart = chart.to_str().expect("path");
    let kc = hub_config.to_str().expect("path");
    let (ok, out, err) =
        helm(home, &["install", "kdfed", chart, "-n", "kdfed-system", "--create-namespace", "--kubeconfig", kc]);
    assert!(ok, "helm install: {out}{err}");
    let client = bed.client("hub").await.expect("client");
    let deployment: Deployment = Api::namespaced(client.clone(), "kdfed-system").get("kdfed-hub").await.expect("hub");
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(2));
    // RBAC bound: the hub's ServiceAccount may do what the hub does, and no more.
    let sa = "system:serviceaccount:kdfed-system:kdfed-hub";
    for (verb, resource, expected) in [
        ("patch", "kubedirectorclusters.kubedirector.hpe.com", "yes"),
        ("watch", "kubedirectormembers.federation.kubedirector.hpe.com", "yes"),
        ("delete", "kubedirectorclusters.kubedirector.hpe.com", "no"),
    ] {
        let (_, out) = kubectl(&hub_config, &["auth", "can-i", verb, resource, "--as", sa, "-A"], None);
        assert_eq!(out.trim(), expected, "can-i {verb} {resource}");
    }
    let (_, out) =
        kubectl(&hub_config, &["auth", "can-i", "update", "leases/kdfed-hub", "-n", "kdfed-system", "--as", sa], None);
    assert_eq!(out.trim(), "yes", "the leader-election Role is bound");
    // caBundle: the generated CA, the one in the serving certificate's Secret.
    let secret: Secret =
        Api::namespaced(client.clone(), "kdfed-system").get("kdfed-hub-webhook-tls").await.expect("webhook Secret");
    let ca = secret.data.as_ref().and_then(|d| d.get("ca.crt")).expect("ca.crt").0.clone();
    assert!(String::from_utf8_lossy(&ca).contains("BEGIN CERTIFICATE"));
    let bundles = |client: kube::Client| async move {
        let v: ValidatingWebhookConfiguration =
            Api::all(client.clone()).get("kdfed-hub.kubedirector.hpe.com").await.expect("validating");
        let m: MutatingWebhookConfiguration =
            Api::all(client).get("kdfed-hub.kubedirector.hpe.com").await.expect("mutating");
        let mut all: Vec<Vec<u8>> =
            v.webhooks.unwrap_or_default().into_iter().filter_map(|h| h.client_config.ca_bundle.map(|b| b.0)).collect();
        all.extend(m.webhooks.unwrap_or_default().into_iter().filter_map(|h| h.client_config.ca_bundle.map(|b| b.0)));
        all
    };
    let installed = bundles(client.clone()).await;
    assert_eq!(installed.len(), 6, "every webhook has a caBundle");
    assert!(installed.iter().all(|b| *b == ca), "caBundle is the Secret's ca.crt");

    // Upgrade: new values reach the objects; the certificate stays.
    let (ok, out, err) = helm(
        home,
        &[
            "upgrade",
            "kdfed",
            chart,
            "-n",
            "kdfed-system",
            "--kubeconfig",
            kc,
            "--set",
            "hub.replicas=3",
            "--set",
            "extraLabels.team=platform",
        ],
    );
    assert!(ok, "helm upgrade: {out}{err}");
    let deployment: Deployment = Api::namespaced(client.clone(), "kdfed-system").get("kdfed-hub").await.expect("hub");
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(deployment.metadata.labels.as_ref().and_then(|l| l.get("team")).map(String::as_str), Some("platform"));
    assert_eq!(bundles(client.clone()).await, installed, "the upgrade kept the generated CA");

    // Uninstall: nothing cluster-scoped is left but the CRDs (and the namespace that
    // --create-namespace made, which Helm never deletes).
    let (ok, out, err) = helm(home, &["uninstall", "kdfed", "-n", "kdfed-system", "--kubeconfig", kc, "--wait"]);
    assert!(ok, "helm uninstall: {out}{err}");
    let after = cluster_scoped(&hub_config);
    let left: Vec<&String> = after
        .difference(&before)
        .filter(|o| !o.starts_with("customresourcedefinition.") && *o != "namespace/kdfed-system")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(after.iter().any(|o| o.contains("kubedirectorclusters.kubedirector.hpe.com")), "the CRDs stay");
}

/// The object `kind/name` of a rendering.
fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} not rendered"))
}

/// The first container's arguments of the rendered Deployment `name`.
fn args(objects: &[Value], name: &str) -> Vec<String> {
    let d = object(objects, "Deployment", name);
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

/// Values reach the objects: the join Secret from values or an existing one, the three
/// certificate modes, settings, images, replicas, resources and extra labels.
#[test]
fn the_values_reach_the_objects() {
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path();
    let secret_volume = |objects: &[Value], volume: &str| -> Value {
        let d = object(objects, "Deployment", "kdfed-spoke");
        let volumes = d["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes").clone();
        volumes.into_iter().find(|v| v["name"] == volume).expect("volume")["secret"].clone()
    };

    // The join Secret: made from the kubeconfig given, or an existing one mounted.
    let given =
        template(home, &["component=spoke", "spoke.member=east", "spoke.join.kubeconfig=KUBECONFIG TEXT"], false);
    assert_eq!(object(&given, "Secret", "kdfed-hub-join")["stringData"]["kubeconfig"], "KUBECONFIG TEXT");
    assert_eq!(secret_volume(&given, "hub")["secretName"], "kdfed-hub-join");
    assert!(args(&given, "kdfed-spoke").contains(&"--member=$(KDFED_MEMBER)".to_string()));
    let existing =
        template(home, &["component=spoke", "spoke.member=east", "spoke.join.existingSecret=my-join"], false);
    assert!(!existing.iter().any(|o| o["kind"] == "Secret"), "no Secret is made for an existing one");
    assert_eq!(secret_volume(&existing, "hub")["secretName"], "my-join");

    // cert-manager: a Certificate for the Service's names, a self-signed Issuer unless one is
    // named, and the injector's annotation on both configurations.
    let cm = template(home, &["webhook.certificate=cert-manager"], false);
    let cert = object(&cm, "Certificate", "kdfed-hub-webhook");
    assert_eq!(cert["spec"]["secretName"], "kdfed-hub-webhook-tls");
    assert_eq!(cert["spec"]["issuerRef"]["name"], "kdfed-hub-selfsigned");
    object(&cm, "Issuer", "kdfed-hub-selfsigned");
    for kind in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
        let hook = object(&cm, kind, "kdfed-hub.kubedirector.hpe.com");
        assert_eq!(hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], "kdfed-system/kdfed-hub-webhook");
        assert!(hook["webhooks"][0]["clientConfig"]["caBundle"].is_null());
    }
    let cm = template(
        home,
        &[
            "webhook.certificate=cert-manager",
            "webhook.certManager.issuerRef.name=corp",
            "webhook.certManager.issuerRef.kind=ClusterIssuer",
        ],
        false,
    );
    assert!(!cm.iter().any(|o| o["kind"] == "Issuer"));
    assert_eq!(object(&cm, "Certificate", "kdfed-hub-webhook")["spec"]["issuerRef"]["kind"], "ClusterIssuer");

    // A provided Secret: the caBundle given, or the hub fills it in through the Service.
    let provided =
        template(home, &["webhook.certificate=secret", "webhook.secretName=corp-tls", "webhook.caBundle=Q0E="], false);
    let hook = object(&provided, "ValidatingWebhookConfiguration", "kdfed-hub.kubedirector.hpe.com");
    assert_eq!(hook["webhooks"][0]["clientConfig"]["caBundle"], "Q0E=");
    assert!(!args(&provided, "kdfed-hub").iter().any(|a| a.starts_with("--webhook-service")));
    let d = object(&provided, "Deployment", "kdfed-hub");
    assert_eq!(d["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"], "corp-tls");
    let registered = template(home, &["webhook.certificate=secret"], false);
    let a = args(&registered, "kdfed-hub");
    assert!(a.contains(&"--webhook-service=kdfed-system/kdfed-hub:443".to_string()), "{a:?}");
    assert!(a.contains(&"--webhook-ca-file=/etc/kdfed/tls/ca.crt".to_string()), "{a:?}");
    assert!(!registered.iter().any(|o| o["kind"] == "Secret"), "a provided Secret is not made");

    // Settings, image, replicas, resources, labels.
    let custom = template(
        home,
        &[
            "hub.settings.heartbeat_grace_seconds=45",
            "image.repository=registry.example/kdfed",
            "image.tag=1.2.3",
            "hub.replicas=3",
            "hub.resources.limits.memory=1Gi",
            "extraLabels.team=platform",
            "logFormat=text",
        ],
        false,
    );
    let config = object(&custom, "ConfigMap", "kdfed-hub-config");
    assert_eq!(config["data"]["config.yaml"].as_str().map(str::trim), Some("heartbeat_grace_seconds: 45"));
    let a = args(&custom, "kdfed-hub");
    assert!(
        a.contains(&"--config=/etc/kdfed/config/config.yaml".to_string())
            && a.contains(&"--log-format=text".to_string()),
        "{a:?}"
    );
    let d = object(&custom, "Deployment", "kdfed-hub");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/kdfed:1.2.3");
    assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(d["spec"]["replicas"], 3.0);
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["team"], "platform");
    for o in &custom {
        assert_eq!(
            o["metadata"]["labels"]["team"], "platform",
            "{} {} lacks the extra label",
            o["kind"], o["metadata"]["name"]
        );
    }
}
