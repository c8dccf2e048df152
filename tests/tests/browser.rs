//! The end users' console (issue #12) in a real browser: headless Chromium, driven over W3C
//! WebDriver by Debian's chromedriver, against `kdfed-console` on a test-bed fleet (hub with
//! its webhook, east and west spokes). An end user with a namespaced Role (and the local
//! fleet's `kdfed-member-reader`, so member labels are offered) pastes their token into the
//! sign-in form, is offered only the namespace they may create clusters in, picks an app, has a launch refused by the webhook (the message at its
//! field), sets a config choice and a placement label (the matching count is the page's
//! JavaScript), launches, watches the page turn Ready on east without a reload (the
//! JavaScript's polling), sees the endpoints, expands the workers, is "not allowed" in
//! another namespace without seeing its data, and deletes the cluster after the
//! confirmation. Every step leaves a screenshot in `<target>/browser-artifacts/`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::console::*;
use support::webdriver::Browser;
use support::*;

/// `<target>/browser-artifacts/<test>`: next to the binaries, kept after the test.
fn artifacts(test: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // <target>/debug/deps/<test> → <target>
    let target = exe.ancestors().nth(3).expect("target folder");
    let dir = target.join("browser-artifacts").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Alice may read the member clusters (the local fleet grants the same ClusterRole), and
/// team-a has an app with a config choice and a minimum worker memory the webhook enforces.
async fn prepare(hub: &Client) {
    let rbac = [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "kdfed-member-reader"},
            "rules": [{"apiGroups": ["federation.kubedirector.hpe.com"], "resources": ["kubedirectormembers"],
                       "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "alice-member-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kdfed-member-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": "team-a"}]}),
    ];
    // Alice may list namespaces and read the system catalog, and create clusters in team-a
    // and team-b only (team-b holds nothing she could see): the launch form of a system app
    // must offer those two, found by listing namespaces and checking each.
    let more = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "cluster-creator", "namespace": "team-b"},
            "rules": [{"apiGroups": ["kubedirector.hpe.com"], "resources": ["kubedirectorclusters"], "verbs": ["create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "alice-cluster-creator", "namespace": "team-b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cluster-creator"},
            "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": "team-a"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "namespace-lister"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "alice-namespace-lister"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "namespace-lister"},
            "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": "team-a"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "catalog-reader", "namespace": "kdfed-system"},
            "rules": [{"apiGroups": ["kubedirector.hpe.com"], "resources": ["kubedirectorapps"], "verbs": ["get", "list"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "alice-catalog-reader", "namespace": "kdfed-system"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "catalog-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": "team-a"}]}),
    ];
    for object in rbac.into_iter().chain(more) {
        create(hub, object).await;
    }
    let mut app = spark_like();
    app["metadata"] = json!({"name": "notebook", "namespace": "team-a"});
    app["spec"]["label"] = json!({"name": "Notebook", "description": "A notebook with Spark workers"});
    app["spec"]["distroID"] = json!("test/notebook");
    app["spec"]["roles"][1]["minResources"] = json!({"memory": "128Mi"});
    app["spec"]["configChoices"] =
        json!([{"id": "mode", "label": {"name": "Mode"}, "values": ["batch", "interactive"], "mutable": true}]);
    let apps: Api<KubeDirectorApp> = Api::namespaced(hub.clone(), "team-a");
    apps.create(&PostParams::default(), &serde_json::from_value(app).expect("app")).await.expect("notebook app");
    let mut system = spark_like();
    system["metadata"] = json!({"name": "spark-system", "namespace": "kdfed-system"});
    system["spec"]["label"] = json!({"name": "Spark for everyone"});
    let apps: Api<KubeDirectorApp> = Api::namespaced(hub.clone(), "kdfed-system");
    apps.create(&PostParams::default(), &serde_json::from_value(system).expect("app")).await.expect("system app");
}

/// A system app may be launched in any namespace: the form offers those alice may create
/// clusters in (team-a, team-b), not every namespace she may list (default, kdfed-system…).
async fn namespaces_offered(b: &Browser, base: &str) {
    b.goto(&format!("{base}/launch/kdfed-system/spark-system")).await;
    let offered = b.text("select#namespace").await;
    assert_eq!(offered.split_whitespace().collect::<Vec<_>>(), ["team-a", "team-b"], "namespaces offered");
    assert!(b.source().await.contains("<option value=\"team-a\" selected=\"\">"), "her own first");
    b.screenshot("namespaces-offered").await;
    b.goto(&format!("{base}/catalog")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_end_user_launches_watches_expands_and_deletes_in_a_real_browser() {
    support::webdriver::require_browser();
    let fleet = fleet().await;
    let hub = fleet.hub.clone();
    let token = end_user(&hub).await;
    prepare(&hub).await;
    seed_catalog(&hub).await;
    let others: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let theirs: KubeDirectorCluster =
        serde_json::from_value(cluster("payroll-secret", 1, "100m", None)).expect("cluster");
    others.create(&PostParams::default(), &theirs).await.expect("another team's cluster");
    let (mut console, port, _) = start_console(&fleet, "console", &[]).await;
    let base = format!("http://127.0.0.1:{port}");
    let dir = artifacts("end-user");
    eprintln!("browser screenshots: {}", dir.display());
    let b = Browser::start(&fleet.dir, dir).await;

    sign_in(&b, &base, &token).await;
    namespaces_offered(&b, &base).await;
    launch_refused_then_placed(&b, &hub).await;
    watch_ready_live(&b).await;
    expand(&b, &base, &hub).await;
    not_allowed(&b, &base).await;
    delete(&b, &base, &hub).await;

    b.quit().await;
    console.kill();
}

/// No session: the catalog sends the browser to sign-in; the pasted token signs in.
async fn sign_in(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/catalog")).await;
    assert!(b.url().await.ends_with("/sign-in"), "no session: sent to sign-in, at {}", b.url().await);
    b.fill("#token", token).await;
    b.screenshot("sign-in").await;
    b.click("form[action=\"/sign-in\"] button[type=submit]").await;
    b.wait_text("h1", "the catalog after sign-in", |t| t == "Catalog").await;
    let text = b.page_text().await;
    for said in ["system:serviceaccount:team-a:alice", "Notebook", "Mode", "interactive", "Spark lite"] {
        assert!(text.contains(said), "{said} missing in the catalog:\n{text}");
    }
    b.screenshot("catalog").await;
}

/// The launch form: a worker memory below the app's minimum is refused by the webhook
/// (message at that field, input kept); then a choice and the label `region=east` (whose
/// matching count only the page's script computes) launch it.
async fn launch_refused_then_placed(b: &Browser, hub: &Client) {
    b.click("a[href=\"/launch/team-a/notebook\"]").await;
    b.wait_text("h1", "the launch form", |t| t.starts_with("Launch Notebook")).await;
    b.fill("#name", "hello").await;
    b.fill("#cpu-worker", "100m").await;
    b.fill("#memory-worker", "64Mi").await;
    b.click("form.launch button[type=submit]").await;
    let refusal = b
        .wait_text("#memory-worker ~ p.error", "the webhook's refusal at the memory field", |t| {
            t.contains("(rule: min-resources)")
        })
        .await;
    assert!(refusal.contains("128Mi"), "{refusal}");
    assert!(b.source().await.contains("value=\"hello\""), "the name typed is kept");
    b.screenshot("launch-refused").await;
    let mine: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "team-a");
    assert!(mine.get_opt("hello").await.expect("get").is_none(), "nothing half-created");

    // A team's own app launches in that team's namespace.
    assert_eq!(b.text("select#namespace").await.trim(), "team-a");
    b.fill("#memory-worker", "256Mi").await;
    b.select("#choice-mode", "interactive").await;
    assert_eq!(b.text("#matching").await, "", "no count before a label is chosen");
    // The count and the room are the page's script: no submit, no reload.
    b.click("input[name=label][value=\"region=east\"]").await;
    let room = |n: &'static str| move |t: &str| t.starts_with("1 member cluster matches") && t.contains(n);
    b.wait_text("#matching", "the live count with room (JavaScript)", room(", 1 with room")).await;
    b.fill("#members-worker", "100000").await;
    b.click("#labels").await;
    b.wait_text("#matching", "no room for 100000 workers (JavaScript)", room(", 0 with room")).await;
    b.fill("#members-worker", "1").await;
    b.click("#labels").await;
    b.wait_text("#matching", "room again for one worker (JavaScript)", room(", 1 with room")).await;
    b.scroll_to("#matching").await;
    b.screenshot("launch-form").await;
    b.click("form.launch button[type=submit]").await;
    b.wait_text("h1", "the cluster page after launch", |t| t.contains("hello")).await;
    assert!(b.url().await.ends_with("/clusters/team-a/hello"), "{}", b.url().await);
    let created = mine.get("hello").await.expect("the cluster is on the hub");
    assert_eq!(created.spec.config_choices.get("mode").map(String::as_str), Some("interactive"));
    let selector = created.spec.placement.and_then(|p| p.member_selector).and_then(|s| s.match_labels);
    assert_eq!(selector.and_then(|s| s.get("region").cloned()).as_deref(), Some("east"));
}

/// The cluster page turns Ready on east while the browser stays on the same document: the
/// element read before is still there (a reload would make it stale), so the page's
/// polling script changed it.
async fn watch_ready_live(b: &Browser) {
    let summary = b.element("[data-field=\"summary\"]").await;
    let first = b.text_of(&summary).await.expect("summary");
    assert_ne!(first, "Ready", "a cluster just created is not Ready yet");
    b.screenshot("cluster-created").await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let now = b.text_of(&summary).await.unwrap_or_else(|e| panic!("the page was replaced: {}", e.message));
        if now == "Ready" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page never turned Ready by itself: {now}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(b.text("[data-field=\"member\"]").await, "east");
    b.screenshot("cluster-ready-live").await;
    // Endpoints (read when the page is loaded): the dashboard of the controller as a link.
    let url = b.url().await;
    b.goto(&url).await;
    let source = b.source().await;
    assert!(source.contains("<a href=\"http://") && source.contains(":8080"), "{source}");
    b.screenshot("cluster-endpoints").await;
}

/// Two workers from the cluster page; the page lists them per role once reported.
async fn expand(b: &Browser, base: &str, hub: &Client) {
    b.fill("#members-worker", "2").await;
    b.click("form[action$=\"/members\"] button[type=submit]").await;
    let mine: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "team-a");
    wait_cluster(&mine, "hello", "two workers ready", |c| ready_with(c, "3/3")).await;
    b.goto(&format!("{base}/clusters/team-a/hello")).await;
    let text = b.wait_text("[data-field=\"ready\"]", "three members ready", |t| t == "3/3").await;
    assert_eq!(text, "3/3");
    let source = b.source().await;
    assert_eq!(source.matches("data-pod=").count(), 3, "members per role: {source}");
    b.screenshot("cluster-expanded").await;
}

/// Another namespace: "Not allowed", and nothing of what is there.
async fn not_allowed(b: &Browser, base: &str) {
    b.goto(&format!("{base}/clusters?namespace=default")).await;
    let text = b.page_text().await;
    assert!(text.contains("Not allowed") && text.contains("not allowed to list clusters in default"), "{text}");
    assert!(!b.source().await.contains("payroll-secret"), "no data of default");
    b.screenshot("not-allowed").await;
}

/// The confirmation says what happens to the data and wants the name.
async fn delete(b: &Browser, base: &str, hub: &Client) {
    b.goto(&format!("{base}/clusters/team-a/hello/delete")).await;
    assert!(b.text("#data").await.contains("DELETED"), "the confirmation says the data goes");
    b.fill("#confirm", "hello").await;
    b.screenshot("delete-confirmation").await;
    b.click("form[action$=\"/delete\"] button[type=submit]").await;
    let mine: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "team-a");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while mine.get_opt("hello").await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the cluster was not deleted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    b.screenshot("deleted").await;
}
