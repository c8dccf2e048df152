//! Least privilege and secret material, proven on the fleet: what every identity of kdfed
//! may do on the hub and a member (compared with committed tables), the fence around the
//! hub's cluster-wide verbs, revocation, and that no secret value is stored in the clear
//! anywhere on the hub but in real Secrets, nor logged, nor exported as a metric.
//!
//! The tables are in `tests/expected/access-*.txt`; after a deliberate change of the shipped
//! RBAC, regenerate them with `KDFED_BLESS=1 cargo test -p kdfed-testbed --test security`
//! and review the diff.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Secret;
use kdfed_crds::federation::KubeDirectorMember;
use kdfed_crds::{KubeDirectorCluster, KubeDirectorConfig};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, Scope};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

mod support;
use support::*;

/// One identity whose permissions are tabled.
struct Identity {
    /// File stem of its table.
    table: &'static str,
    user: String,
    /// The namespace of its ServiceAccount.
    home: String,
    /// Namespaces whose permissions are tabled.
    namespaces: Vec<&'static str>,
    /// Named checks: (namespace or "", group, resource, subresource, name, verb).
    named: Vec<(&'static str, &'static str, &'static str, &'static str, &'static str, &'static str)>,
}

fn expected_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("expected")
}

async fn allowed(client: &Client, who: &Identity, attrs: Value) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": who.user,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", who.home), "system:authenticated"],
            "resourceAttributes": attrs,
        }
    }))
    .expect("review");
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    answer.status.is_some_and(|s| s.allowed)
}

/// Every (scope, resource, verb) the API server's discovery offers that `who` may use,
/// one line each, plus the named checks with their answers.
async fn access_table(client: &Client, who: &Identity) -> Vec<String> {
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    let mut checks: Vec<(String, Value)> = Vec::new();
    let mut add = |resource: &ApiResource, verbs: &[String], namespaced: bool, sub: &str| {
        let scopes: Vec<&str> = if namespaced { who.namespaces.clone() } else { vec![""] };
        let group = if resource.group.is_empty() { "core" } else { resource.group.as_str() };
        let plural = if sub.is_empty() { resource.plural.clone() } else { format!("{}/{sub}", resource.plural) };
        for scope in scopes {
            for verb in verbs {
                let line = format!("{} {group} {plural} {verb}", if scope.is_empty() { "(cluster)" } else { scope });
                let attrs = json!({"namespace": scope, "verb": verb, "group": resource.group,
                    "resource": resource.plural, "subresource": sub});
                checks.push((line, attrs));
            }
        }
    };
    for group in discovery.groups() {
        for (resource, caps) in group.resources_by_stability() {
            let namespaced = caps.scope == Scope::Namespaced;
            add(&resource, &caps.operations, namespaced, "");
            for (sub, sub_caps) in &caps.subresources {
                let name = sub.plural.rsplit('/').next().unwrap_or_default().to_string();
                let verbs =
                    if sub_caps.operations.is_empty() { vec!["get".to_string()] } else { sub_caps.operations.clone() };
                add(&resource, &verbs, namespaced, &name);
            }
        }
    }
    let mut lines: BTreeSet<String> = futures::stream::iter(checks)
        .map(|(line, attrs)| async move { allowed(client, who, attrs).await.then_some(line) })
        .buffer_unordered(24)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    for (ns, group, resource, sub, name, verb) in &who.named {
        let attrs = json!({"namespace": ns, "verb": verb, "group": group, "resource": resource,
            "subresource": sub, "name": name});
        let answer = if allowed(client, who, attrs).await { "allowed" } else { "denied" };
        let scope = if ns.is_empty() { "(cluster)" } else { ns };
        let sub = if sub.is_empty() { String::new() } else { format!("/{sub}") };
        let group = if group.is_empty() { "core" } else { group };
        lines.insert(format!("named {scope} {group} {resource}{sub} {name} {verb}: {answer}"));
    }
    lines.into_iter().collect()
}

/// Compares `lines` with the committed table (or writes it under `KDFED_BLESS=1`).
fn compare_with_table(table: &str, lines: &[String]) -> Option<String> {
    let path = expected_dir().join(format!("access-{table}.txt"));
    let text = format!(
        "# What {table} may do (SubjectAccessReview over the API server's discovery); generated by\n# tests/tests/security.rs, regenerate with KDFED_BLESS=1 and review the diff.\n{}\n",
        lines.join("\n")
    );
    if std::env::var_os("KDFED_BLESS").is_some() {
        std::fs::create_dir_all(expected_dir()).expect("expected dir");
        std::fs::write(&path, &text).expect("write table");
        return None;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let want: BTreeSet<&str> = committed.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let have: BTreeSet<&str> = lines.iter().map(String::as_str).collect();
    let extra: Vec<&&str> = have.difference(&want).collect();
    let missing: Vec<&&str> = want.difference(&have).collect();
    (!extra.is_empty() || !missing.is_empty()).then(|| {
        format!("{}: more than the table allows: {extra:#?}\nless than the table allows: {missing:#?}", path.display())
    })
}

#[tokio::test]
async fn every_identity_may_do_exactly_what_its_committed_table_says_and_no_more() {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    let east = fleet.bed.client("east").await.expect("east");
    let hub_namespaces = vec!["kdfed-member-east", "kdfed-member-west", "kdfed-system", "default", "kube-system"];
    let hub_identities = [
        Identity {
            table: "member-east",
            user: "system:serviceaccount:kdfed-member-east:kdfed-spoke".into(),
            home: "kdfed-member-east".into(),
            namespaces: hub_namespaces.clone(),
            named: vec![
                ("", "federation.kubedirector.hpe.com", "kubedirectormembers", "", "east", "get"),
                ("", "federation.kubedirector.hpe.com", "kubedirectormembers", "", "west", "get"),
                ("", "federation.kubedirector.hpe.com", "kubedirectormembers", "status", "east", "patch"),
                ("", "federation.kubedirector.hpe.com", "kubedirectormembers", "status", "west", "patch"),
                ("kdfed-member-east", "", "serviceaccounts", "token", "kdfed-spoke", "create"),
                ("kdfed-member-west", "", "serviceaccounts", "token", "kdfed-spoke", "create"),
            ],
        },
        Identity {
            table: "fleet-admin",
            user: "system:serviceaccount:platform:fleet-admin".into(),
            home: "platform".into(),
            namespaces: hub_namespaces.clone(),
            named: vec![
                ("kube-system", "", "serviceaccounts", "token", "default", "create"),
                ("kdfed-member-east", "", "serviceaccounts", "token", "kdfed-spoke", "create"),
                ("", "", "namespaces", "", "kube-system", "delete"),
                ("", "rbac.authorization.k8s.io", "clusterroles", "", "cluster-admin", "bind"),
            ],
        },
        Identity {
            table: "hub",
            user: "system:serviceaccount:kdfed-system:kdfed-hub".into(),
            home: "kdfed-system".into(),
            namespaces: hub_namespaces,
            named: vec![
                ("", "rbac.authorization.k8s.io", "clusterroles", "", "kdfed-member", "bind"),
                ("", "rbac.authorization.k8s.io", "clusterroles", "", "cluster-admin", "bind"),
                ("", "rbac.authorization.k8s.io", "clusterroles", "", "cluster-admin", "escalate"),
            ],
        },
    ];
    let spoke = Identity {
        table: "spoke-on-member",
        user: "system:serviceaccount:kdfed-system:kdfed-spoke".into(),
        home: "kdfed-system".into(),
        namespaces: vec!["kdfed-system", "default", "kube-system"],
        named: vec![
            ("kdfed-system", "coordination.k8s.io", "leases", "", "kdfed-spoke-heartbeat", "patch"),
            ("kdfed-system", "coordination.k8s.io", "leases", "", "kdfed-hub", "patch"),
        ],
    };
    // The fence watchdog reads the spoke's heartbeat record, fences copies and scales their
    // StatefulSets; it may not delete anything, read Secrets or touch PVCs.
    let watchdog = Identity {
        table: "fence-watchdog-on-member",
        user: "system:serviceaccount:kdfed-system:kdfed-fence-watchdog".into(),
        home: "kdfed-system".into(),
        namespaces: vec!["kdfed-system", "default", "kube-system"],
        named: vec![
            ("kdfed-system", "coordination.k8s.io", "leases", "", "kdfed-spoke-heartbeat", "get"),
            ("kdfed-system", "coordination.k8s.io", "leases", "", "kdfed-spoke-heartbeat", "patch"),
            ("kdfed-system", "coordination.k8s.io", "leases", "", "kdfed-hub", "get"),
        ],
    };
    // The fleet admin's identity exists once it is used.
    let platform = fleet.platform_team().await;
    let mut failures = Vec::new();
    for who in &hub_identities {
        let lines = access_table(&hub, who).await;
        failures.extend(compare_with_table(who.table, &lines));
    }
    failures.extend(compare_with_table(spoke.table, &access_table(&east, &spoke).await));
    failures.extend(compare_with_table(watchdog.table, &access_table(&east, &watchdog).await));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // No role shipped or made by the registry holds a wildcard.
    let roles = Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(hub.clone()).list(&ListParams::default()).await;
    for role in roles.expect("roles").items.iter().filter(|r| r.name_any().starts_with("kdfed-")) {
        let text = serde_json::to_string(&role.rules).expect("rules");
        assert!(!text.contains("\"*\""), "{} holds a wildcard: {text}", role.name_any());
    }

    // The fence: what RBAC lets the hub do cluster-wide, admission confines to kdfed's own
    // namespaces and member RBAC. Real calls with the hub's own credentials.
    let hub_identity = kdfed_testbed::client_for(&fleet.dir.join("hub-sa.kubeconfig")).await.expect("hub identity");
    let refused = |r: Result<String, kube::Error>, what: &str| match r {
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => e.message,
        other => panic!("{what} was not refused: {other:?}"),
    };
    let token = kdfed_common::tokens::issue(&hub_identity, "kube-system", "default", 600).await;
    let message = refused(
        token.map_err(|e| match e {
            kdfed_common::tokens::TokenError::Kube { source, .. } => source,
            other => panic!("{other}"),
        }),
        "the hub minting a token in kube-system",
    );
    assert!(message.contains("kdfed-hub may only change kdfed-member-*"), "{message}");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(hub_identity.clone());
    let deleted = namespaces.delete("default", &Default::default()).await.map(|_| String::new());
    refused(deleted, "the hub deleting namespace default");
    let evil: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "evil"}})).expect("ns");
    refused(namespaces.create(&PostParams::default(), &evil).await.map(|_| String::new()), "the hub creating ns evil");
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "planted"}, "stringData": {"k": "v"}})).expect("secret");
    let planted =
        Api::<Secret>::namespaced(hub_identity.clone(), "default").create(&PostParams::default(), &secret).await;
    refused(planted.map(|_| String::new()), "the hub writing a Secret in default");
    // ... while in a member's namespace it may (the Work's secret material lives there).
    let own = Api::<Secret>::namespaced(hub_identity.clone(), "kdfed-member-west");
    own.create(&PostParams::default(), &secret).await.expect("the hub writes Secrets in member namespaces");
    own.delete("planted", &Default::default()).await.expect("delete");

    // The platform team cannot mint tokens, nor delete outside what it registers.
    let token = kdfed_common::tokens::issue(&platform, "kube-system", "default", 600).await;
    assert!(
        matches!(token, Err(kdfed_common::tokens::TokenError::Kube { source: kube::Error::Api(ref e), .. }) if e.code == 403),
        "the platform team minted a token: {token:?}"
    );
    let gone = Api::<k8s_openapi::api::core::v1::Namespace>::all(platform.clone())
        .delete("kube-system", &Default::default())
        .await;
    assert!(matches!(gone, Err(kube::Error::Api(ref e)) if e.code == 403), "{gone:?}");

    // The hub holds no member credential: no Secret on the hub carries east's token.
    let east_token = std::fs::read_to_string(fleet.join_file("east"))
        .expect("join file")
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .expect("token");
    for s in Api::<Secret>::all(hub.clone()).list(&ListParams::default()).await.expect("secrets").items {
        let text = serde_json::to_string(&s.data).expect("data");
        let decoded: String = s.data.iter().flatten().map(|(_, v)| String::from_utf8_lossy(&v.0).to_string()).collect();
        assert!(
            !text.contains(&east_token) && !decoded.contains(&east_token),
            "Secret {} holds east's token",
            s.name_any()
        );
        assert_ne!(s.type_.as_deref(), Some("kubernetes.io/service-account-token"), "{}", s.name_any());
    }
    // The member object keeps no credentials once `member add` took them.
    let member = Api::<KubeDirectorMember>::all(hub.clone()).get("east").await.expect("east");
    assert!(member.spec.join.is_none() && member.status.and_then(|s| s.join).is_none(), "join answer left behind");

    // A revoked member is refused within seconds.
    let west_identity = fleet.member_client("west").await;
    let west_works = Api::<kdfed_crds::federation::KubeDirectorWork>::namespaced(west_identity, "kdfed-member-west");
    west_works.list(&ListParams::default()).await.expect("west reads its Works");
    let started = std::time::Instant::now();
    kdfed_hub::registry::remove_member(&platform, "west", false).await.expect("remove west");
    loop {
        match west_works.list(&ListParams::default()).await {
            Err(kube::Error::Api(e)) if e.code == 401 || e.code == 403 => break,
            other => assert!(started.elapsed() < Duration::from_secs(30), "west's token still works: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("west refused {:.1}s after `member remove` began", started.elapsed().as_secs_f64());
    // West's spoke, still running, says once that it was refused and backs off, instead of
    // warning every few seconds from each of its loops.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let log = std::fs::read_to_string(&fleet.spokes["west"].log).expect("west's log");
    let said = log.lines().filter(|l| l.contains("the hub refuses this member's credentials")).count();
    let noise = log.lines().filter(|l| l.contains("Unauthorized") || l.contains(" 401")).count();
    assert_eq!(said, 1, "west's spoke should say once that it was refused:\n{log}");
    assert!(noise <= 4, "west's spoke logs {noise} lines about the refusal in 15 s");
    fleet.spokes.remove("west");
}

/// The spoke's webhooks skip the fence watchdog's identity (their matchConditions), so that
/// it can annotate a copy self-fenced while the spoke — and so the webhook — is dead; the
/// ValidatingAdmissionPolicy kdfed-fence-watchdog that deploy/spoke ships lets that identity
/// change nothing else on a cluster. Real calls on east, whose spoke serves the member's
/// webhook, with the watchdog's own credentials, after the spoke was killed.
#[tokio::test]
async fn the_fence_watchdog_may_only_annotate_clusters_even_past_a_dead_webhook() {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let manifest = cluster("guarded", 1, "1", Some(("region", "east")));
    clusters.create(&PostParams::default(), &serde_json::from_value(manifest).expect("c")).await.expect("create");
    wait_cluster(&clusters, "guarded", "placed on east", |c| member_of(c).as_deref() == Some("east")).await;
    let east = fleet.bed.client("east").await.expect("east");
    let admin: Api<KubeDirectorCluster> = Api::namespaced(east.clone(), "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while admin.get_opt("guarded").await.expect("get").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "guarded never reached east");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let watchdog = kdfed_testbed::client_for(&fleet.watchdog_identity("east")).await.expect("watchdog identity");
    let as_watchdog: Api<KubeDirectorCluster> = Api::namespaced(watchdog, "default");
    let merge = |v: Value| kube::api::Patch::Merge(v);
    let pp = kube::api::PatchParams::default();
    let refused = |r: Result<KubeDirectorCluster, kube::Error>, what: &str| match r {
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => e.message,
        other => panic!("{what} was not refused: {other:?}"),
    };
    // With the spoke up, the policy already refuses anything but the annotation.
    let spec = as_watchdog.patch("guarded", &pp, &merge(json!({"spec": {"app": "something-else"}}))).await;
    let message = refused(spec, "the watchdog changing a cluster's spec");
    assert!(message.contains("the fence watchdog may only set the annotation"), "{message}");

    fleet.spokes.get_mut("east").expect("east").kill();
    // Anyone else's write waits for the dead webhook and fails (failurePolicy Fail).
    let label = json!({"metadata": {"labels": {"team": "blue"}}});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match admin.patch("guarded", &pp, &merge(label.clone())).await {
            Err(kube::Error::Api(e)) if e.message.contains("failed calling webhook") => break,
            other => assert!(tokio::time::Instant::now() < deadline, "the dead webhook was not in the way: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The watchdog's annotation passes the dead webhook and the policy.
    let fence =
        json!({"metadata": {"annotations": {"federation.kubedirector.hpe.com/self-fenced": "fence watchdog: test"}}});
    let fenced =
        as_watchdog.patch("guarded", &pp, &merge(fence)).await.expect("the watchdog annotates past the dead webhook");
    assert_eq!(
        fenced.annotations().get("federation.kubedirector.hpe.com/self-fenced").map(String::as_str),
        Some("fence watchdog: test")
    );
    // Nothing else: spec, labels, other annotations, finalizers.
    for (what, patch) in [
        ("spec", json!({"spec": {"app": "something-else"}})),
        ("a label", label),
        ("another annotation", json!({"metadata": {"annotations": {"kdfed.io/other": "x"}}})),
        ("the finalizers", json!({"metadata": {"finalizers": ["kdfed.io/planted"]}})),
        (
            "another annotation beside the fence",
            json!({"metadata": {"annotations": {"federation.kubedirector.hpe.com/self-fenced": "again", "kdfed.io/other": "x"}}}),
        ),
    ] {
        let message =
            refused(as_watchdog.patch("guarded", &pp, &merge(patch)).await, &format!("the watchdog changing {what}"));
        assert!(message.contains("the fence watchdog may only set the annotation"), "{what}: {message}");
    }
    let kept = admin.get("guarded").await.expect("guarded");
    assert_eq!(kept.spec.app, "spark-lite");
    assert!(!kept.labels().contains_key("team") && !kept.annotations().contains_key("kdfed.io/other"));
    assert!(!kept.finalizers().iter().any(|f| f == "kdfed.io/planted"));
}

/// Every object of every listable kind on the API server of `client`, as JSON text, with
/// its kind and name, except Secrets.
async fn everything_but_secrets(client: &Client) -> Vec<(String, String)> {
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.resources_by_stability() {
            if resource.kind == "Secret" || !caps.supports_operation("list") {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let Ok(list) = api.list(&ListParams::default()).await else { continue };
            for o in list.items {
                let what = format!("{} {}/{}", resource.kind, o.namespace().unwrap_or_default(), o.name_any());
                out.push((what, serde_json::to_string(&o).expect("json")));
            }
        }
    }
    out
}

#[tokio::test]
async fn secret_values_are_stored_in_the_clear_nowhere_but_in_secrets() {
    let fleet = fleet().await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    let configs: Api<KubeDirectorConfig> = Api::namespaced(hub.clone(), "kdfed-system");
    let config = json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorConfig",
        "metadata": {"name": "kd-global-config"}, "spec": {}});
    configs.create(&PostParams::default(), &serde_json::from_value(config).expect("config")).await.expect("config");

    // A user applies a Secret and a cluster with a secret key, with kubectl apply (which
    // keeps a copy of what it applied in an annotation).
    let key_value = "Kv-7f3a9c2e-plain-secret-key";
    let secret_value = "Sv-b81d40aa-plain-secret-data";
    let mut c = cluster("vaulted", 1, "100m", Some(("region", "east")));
    c["spec"]["defaultSecret"] = json!({"name": "vault-creds", "mountPath": "/etc/creds"});
    c["spec"]["roles"][1]["secretKeys"] = json!([{"name": "token", "value": key_value}]);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vault-creds", "namespace": "default"},
        "stringData": {"password": secret_value}});
    let manifest = fleet.dir.join("vaulted.yaml");
    std::fs::write(&manifest, format!("{secret}\n---\n{c}\n")).expect("manifest");
    let out = std::process::Command::new(kdfed_testbed::rbac::kubectl().expect("kubectl"))
        .arg("--kubeconfig")
        .arg(&fleet.bed.cluster("hub").kubeconfig)
        .args(["apply", "-f"])
        .arg(&manifest)
        .output()
        .expect("kubectl apply");
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    wait_cluster(&clusters, "vaulted", "ready on east", |c| ready_with(c, "2/2")).await;
    // Applied a second time unchanged, it stays as it is (no new ciphertext, no new generation).
    let before = clusters.get("vaulted").await.expect("vaulted");
    let again = std::process::Command::new(kdfed_testbed::rbac::kubectl().expect("kubectl"))
        .arg("--kubeconfig")
        .arg(&fleet.bed.cluster("hub").kubeconfig)
        .args(["apply", "-f"])
        .arg(&manifest)
        .output()
        .expect("kubectl apply");
    assert!(again.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&again.stderr));
    let after = clusters.get("vaulted").await.expect("vaulted");
    assert_eq!(before.spec.roles[1].secret_keys, after.spec.roles[1].secret_keys, "re-apply changed the ciphertext");

    // Nothing on the hub but Secrets holds either value, plain or base64.
    let b64 = |v: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v);
    let needles = [key_value.to_string(), secret_value.to_string(), b64(key_value), b64(secret_value)];
    let everything = everything_but_secrets(&hub).await;
    for seen in ["KubeDirectorCluster default/vaulted", "KubeDirectorWork kdfed-member-east/default.vaulted"] {
        assert!(everything.iter().any(|(what, _)| what == seen), "the scan missed {seen}");
    }
    let last_applied = after.annotations().get(kdfed_common::admission::LAST_APPLIED).cloned().unwrap_or_default();
    assert!(last_applied.contains("encryptedValue"), "kubectl's copy: {last_applied}");
    let leaks: Vec<String> = everything
        .into_iter()
        .filter(|(_, text)| needles.iter().any(|n| text.contains(n.as_str())))
        .map(|(what, _)| what)
        .collect();
    assert!(leaks.is_empty(), "secret values in the clear on the hub: {leaks:?}");
    // The Work names its secret material, which is a Secret in east's namespace.
    let works = Api::<kdfed_crds::federation::KubeDirectorWork>::namespaced(hub.clone(), "kdfed-member-east");
    let work = works.get("default.vaulted").await.expect("work");
    let reference = work.spec.secret_data.clone().expect("secretData");
    let carried =
        Api::<Secret>::namespaced(hub.clone(), "kdfed-member-east").get(&reference.name).await.expect("secret");
    let carried = serde_json::to_string(&carried.data).expect("data");
    assert!(!carried.is_empty());

    // Nor do the logs of hub and spokes, nor their metrics.
    for log in std::fs::read_dir(&fleet.dir).expect("fleet dir").flatten().map(|e| e.path()) {
        if log.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(!needles.iter().any(|n| text.contains(n.as_str())), "{} logs a secret value", log.display());
        }
    }
    let mut ports = vec![fleet.hub_admin];
    ports.extend(fleet.spoke_admin.values());
    for port in ports {
        let text = http_get(port, "/metrics").await;
        assert!(text.contains("kdfed_"), "metrics of {port}");
        assert!(!needles.iter().any(|n| text.contains(n.as_str())), "metrics on {port} show a secret value");
    }

    // The member's copy is sealed under the member's own key; its Secret copy has the data.
    let east = fleet.bed.client("east").await.expect("east");
    let copy = Api::<KubeDirectorCluster>::namespaced(east.clone(), "default").get("vaulted").await.expect("copy");
    let key = &copy.spec.roles[1].secret_keys[0];
    assert_eq!(key.value, None);
    let east_key = Api::<KubeDirectorConfig>::namespaced(east.clone(), "kdfed-system")
        .get("kd-global-config")
        .await
        .expect("east config")
        .spec
        .master_encryption_key
        .expect("east key");
    let sealed = key.encrypted_value.clone().expect("sealed");
    assert_eq!(kdfed_common::secretkeys::decrypt(&east_key, &sealed).expect("east opens it"), key_value);
    let local_secret = Api::<Secret>::namespaced(east.clone(), "default").get("vault-creds").await.expect("copy");
    let password = local_secret.data.and_then(|d| d.get("password").cloned()).expect("password");
    assert_eq!(String::from_utf8_lossy(&password.0), secret_value);
}

#[tokio::test]
async fn the_webhook_speaks_only_tls() {
    let fleet = fleet().await;
    let port = fleet.webhook_port;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}").await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.starts_with("HTTP/"), "the webhook answered plain HTTP: {text}");
}

/// The shipped roles as a Markdown table: one row per rule.
fn rbac_table() -> String {
    let mut rows = vec![
        "| base | role | API groups | resources | names | verbs |".to_string(),
        "|---|---|---|---|---|---|".to_string(),
    ];
    for base in ["hub", "spoke", "standalone"] {
        let objects = kdfed_testbed::rbac::render(&kdfed_testbed::rbac::deploy_base(base)).expect("render");
        for role in objects.iter().filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role") {
            let name = format!(
                "{} `{}`",
                role["kind"].as_str().unwrap_or_default(),
                role["metadata"]["name"].as_str().unwrap_or_default()
            );
            for rule in role["rules"].as_array().into_iter().flatten() {
                let list = |key: &str| {
                    let items: Vec<String> = rule[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|v| match v.as_str() {
                            Some("") => "core".to_string(),
                            Some(s) => s.to_string(),
                            None => v.to_string(),
                        })
                        .collect();
                    if items.is_empty() { "all".to_string() } else { items.join(", ") }
                };
                rows.push(format!(
                    "| deploy/{base} | {name} | {} | {} | {} | {} |",
                    list("apiGroups"),
                    list("resources"),
                    if rule.get("resourceNames").is_some() { list("resourceNames") } else { "any".into() },
                    list("verbs")
                ));
            }
        }
    }
    rows.join("\n")
}

#[test]
fn shipped_rbac_has_no_wildcards_and_docs_security_shows_every_rule() {
    let table = rbac_table();
    for line in table.lines().skip(2) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert!(!cells.iter().any(|c| c.split(", ").any(|x| x == "*")), "a wildcard in shipped RBAC: {line}");
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/security.md");
    let doc = std::fs::read_to_string(&path).expect("docs/security.md");
    let (begin, end) = ("<!-- rbac-table:begin -->", "<!-- rbac-table:end -->");
    let (Some(i), Some(j)) = (doc.find(begin), doc.find(end)) else {
        panic!("docs/security.md lacks the table markers")
    };
    let shown = doc[i + begin.len()..j].trim();
    if std::env::var_os("KDFED_BLESS").is_some() {
        let updated = format!("{}{begin}\n{table}\n{}", &doc[..i], &doc[j..]);
        std::fs::write(&path, updated).expect("write docs/security.md");
        return;
    }
    assert_eq!(
        shown, table,
        "docs/security.md's RBAC table is stale; regenerate with KDFED_BLESS=1 cargo test -p kdfed-testbed --test security shipped_rbac"
    );
}
