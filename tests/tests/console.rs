//! The end users' console (issue #12) on a real fleet: the `kdfed-console` binary against
//! the hub's API server with kdfed's CRDs and the hub's admission webhook, used over HTTP as
//! a browser would (cookies, forms, redirects) by an end user who has only a namespaced
//! Role. Covers sign-in, the catalog, a launch the webhook refuses (its message at the
//! field), a launch that runs on the member its placement labels pick, a change of member
//! counts, deletion, "not allowed" without data of other namespaces, CSRF, cookie flags, the
//! redirect without a session, metrics, and that the user's token never appears in any page
//! or in the console's log.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::{Daemon, workspace_binary};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::console::*;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_end_user_signs_in_launches_watches_changes_and_deletes_within_their_rights() {
    let fleet = fleet().await;
    let hub = fleet.hub.clone();
    let token = end_user(&hub).await;
    // Another team's cluster in `default`: the end user must see nothing of it.
    seed_catalog(&hub).await;
    let others: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let theirs: KubeDirectorCluster =
        serde_json::from_value(cluster("payroll-secret", 1, "100m", None)).expect("cluster");
    others.create(&PostParams::default(), &theirs).await.expect("another team's cluster");

    let (mut console, port, admin_port) =
        start_console(&fleet, "console", &["--log-level", "debug,hyper=info,h2=info,rustls=info,tower=info"]).await;
    let mut bodies = Vec::new();

    // No session: every page redirects to the sign-in page.
    for path in ["/catalog", "/clusters", "/clusters/team-a/x", "/launch/team-a/spark-lite"] {
        let a = http(port, "GET", path, "", &[]).await;
        assert_eq!((a.status, a.header("location")), (303, Some("/sign-in")), "{path}");
    }
    let forged = http(port, "POST", "/launch/team-a/spark-lite", "", &[("name", "forged")]).await;
    assert_eq!(forged.status, 303, "a POST without a session goes to sign-in too");

    // Sign-in: a wrong token is refused, a form without its CSRF token is refused.
    let form = http(port, "GET", "/sign-in", "", &[]).await;
    assert_eq!(form.status, 200);
    let sign_in_cookie = cookie_pair(&form, "kdfed_sign_in");
    let sign_in_csrf = csrf_of(&form.body);
    let wrong =
        http(port, "POST", "/sign-in", &sign_in_cookie, &[("csrf", &sign_in_csrf), ("token", "not-a-token")]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("does not accept this token"), "{}", wrong.body);
    let no_csrf = http(port, "POST", "/sign-in", &sign_in_cookie, &[("token", &token)]).await;
    assert_eq!(no_csrf.status, 403, "a sign-in form without its CSRF token");
    assert!(no_csrf.cookies().iter().all(|c| !c.starts_with("kdfed_session=")));
    let signed = http(port, "POST", "/sign-in", &sign_in_cookie, &[("csrf", &sign_in_csrf), ("token", &token)]).await;
    assert_eq!((signed.status, signed.header("location")), (303, Some("/catalog")), "{}", signed.body);
    let set = signed.cookies().into_iter().find(|c| c.starts_with("kdfed_session=")).expect("session cookie");
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age=28800", "Path=/"] {
        assert!(set.contains(flag), "{flag} missing in {set}");
    }
    assert!(!set.contains(&token), "the cookie holds the token sealed, not readable");
    let session = cookie_pair(&signed, "kdfed_session");
    bodies.extend([form.body, wrong.body, no_csrf.body, signed.body]);

    // The catalog: the team's app with its roles and services; the system catalog is not theirs.
    let catalog = http(port, "GET", "/catalog", &session, &[]).await;
    assert_eq!(catalog.status, 200, "{}", catalog.body);
    for said in ["Spark lite", "system:serviceaccount:team-a:alice", "1 or more", "exactly 1", "port 8080", "dashboard"]
    {
        assert!(catalog.body.contains(said), "{said} missing in the catalog:\n{}", catalog.body);
    }
    assert!(catalog.body.contains("not allowed to list the apps of the system catalog"), "{}", catalog.body);
    let launch = http(port, "GET", "/launch/team-a/spark-lite", &session, &[]).await;
    assert_eq!(launch.status, 200, "{}", launch.body);
    assert!(launch.body.contains("not allowed to list the member clusters"), "{}", launch.body);
    let offered = field_block(&launch.body, "namespace");
    assert!(offered.contains("<option value=\"team-a\" selected>team-a</option>"), "{offered}");
    assert_eq!(offered.matches("<option").count(), 1, "only team-a is offered: {offered}");
    let csrf = csrf_of(&launch.body);
    assert_eq!(csrf.len(), 32);
    let count = http(port, "GET", "/placement.json?label=region%3Deast", &session, &[]).await;
    assert_eq!(count.status, 403, "no member counts for a user who may not list members");

    // A launch the hub's webhook refuses: its message at the field, the input kept, nothing created.
    let refused = http(
        port,
        "POST",
        "/launch/team-a/spark-lite",
        &session,
        &[
            ("csrf", &csrf),
            ("name", "hello"),
            ("namespace", "team-a"),
            ("members.controller", "1"),
            ("members.worker", "0"),
        ],
    )
    .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let worker_field = field_block(&refused.body, "members-worker");
    assert!(worker_field.contains("(rule: cardinality)"), "the webhook's message at the field: {worker_field}");
    assert!(field_block(&refused.body, "name").contains("value=\"hello\""), "the name typed is kept");
    let mine: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "team-a");
    assert!(mine.get_opt("hello").await.expect("get").is_none(), "nothing half-created");

    // A forged form (no CSRF token) is refused and creates nothing.
    let forged = http(
        port,
        "POST",
        "/launch/team-a/spark-lite",
        &session,
        &[("name", "forged"), ("namespace", "team-a"), ("members.worker", "1")],
    )
    .await;
    assert_eq!(forged.status, 403);
    assert!(mine.get_opt("forged").await.expect("get").is_none());

    // A launch that runs: placed by its label on east, Ready, its dashboard a link.
    let launched = http(
        port,
        "POST",
        "/launch/team-a/spark-lite",
        &session,
        &[
            ("csrf", &csrf),
            ("name", "hello"),
            ("namespace", "team-a"),
            ("members.controller", "1"),
            ("members.worker", "1"),
            ("cpu.worker", "100m"),
            ("memory.worker", "256Mi"),
            ("labels", "region=east"),
        ],
    )
    .await;
    assert_eq!(
        (launched.status, launched.header("location")),
        (303, Some("/clusters/team-a/hello")),
        "{}",
        launched.body
    );
    let created = mine.get("hello").await.expect("the cluster is on the hub");
    let selector = created.spec.placement.as_ref().and_then(|p| p.member_selector.clone()).and_then(|s| s.match_labels);
    assert_eq!(selector, Some(BTreeMap::from([("region".to_string(), "east".to_string())])));
    wait_cluster(&mine, "hello", "Ready on east", |c| ready_with(c, "2/2") && member_of(c).as_deref() == Some("east"))
        .await;
    let page = http(port, "GET", "/clusters/team-a/hello", &session, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for said in
        ["data-field=\"member\">east<", "data-field=\"summary\">Ready<", "configured", "<a href=\"http://", ":8080\""]
    {
        assert!(page.body.contains(said), "{said} missing in the cluster page:\n{}", page.body);
    }
    assert!(page.body.contains("DELETED"), "the page says what deletion does to the data");
    let live = http(port, "GET", "/clusters/team-a/hello/status.json", &session, &[]).await;
    let live: serde_json::Value = serde_json::from_str(&live.body).expect("json");
    assert_eq!(live["row"]["member"], "east");
    let list = http(port, "GET", "/clusters", &session, &[]).await;
    assert!(list.body.contains("/clusters/team-a/hello"), "{}", list.body);

    // Expand the workers from the cluster page.
    let grown = http(
        port,
        "POST",
        "/clusters/team-a/hello/members",
        &session,
        &[("csrf", &csrf), ("members.controller", "1"), ("members.worker", "2")],
    )
    .await;
    assert_eq!(grown.status, 303, "{}", grown.body);
    let worker = mine.get("hello").await.expect("get").spec.roles.into_iter().find(|r| r.id == "worker");
    assert_eq!(worker.and_then(|r| r.members), Some(2));
    let shrink_refused = http(
        port,
        "POST",
        "/clusters/team-a/hello/members",
        &session,
        &[("csrf", &csrf), ("members.controller", "2"), ("members.worker", "2")],
    )
    .await;
    assert_eq!(shrink_refused.status, 422, "{}", shrink_refused.body);
    assert!(field_block(&shrink_refused.body, "members-controller").contains("(rule: cardinality)"));

    // Other namespaces: "not allowed", and nothing of what is there.
    for path in ["/clusters?namespace=default", "/clusters/default/payroll-secret", "/catalog?namespace=default"] {
        let a = http(port, "GET", path, &session, &[]).await;
        assert_eq!(a.status, 403, "{path}: {}", a.body);
        assert!(a.body.contains("Not allowed") && a.body.contains("not allowed to"), "{}", a.body);
        assert!(!a.body.contains("spark-creds") && !a.body.contains("100m"), "no data of default: {}", a.body);
        bodies.push(a.body);
    }

    // Delete: the confirmation says what happens to the data and wants the name.
    let confirm = http(port, "GET", "/clusters/team-a/hello/delete", &session, &[]).await;
    assert!(confirm.body.contains("persistent volume claims are DELETED"), "{}", confirm.body);
    let unconfirmed =
        http(port, "POST", "/clusters/team-a/hello/delete", &session, &[("csrf", &csrf), ("confirm", "nope")]).await;
    assert_eq!(unconfirmed.status, 422);
    assert!(mine.get_opt("hello").await.expect("get").is_some());
    let deleted =
        http(port, "POST", "/clusters/team-a/hello/delete", &session, &[("csrf", &csrf), ("confirm", "hello")]).await;
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while mine.get_opt("hello").await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the cluster was not deleted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let changes = choices_and_upgrade(port, &session, &csrf, &hub).await;
    bodies.extend(changes);

    // Sign-out clears the cookie (and wants the CSRF token too).
    let refused_out = http(port, "POST", "/sign-out", &session, &[]).await;
    assert_eq!(refused_out.status, 403);
    let out = http(port, "POST", "/sign-out", &session, &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.header("location")), (303, Some("/sign-in")));
    assert!(out.cookies().iter().any(|c| c.starts_with("kdfed_session=;") && c.contains("Max-Age=0")));

    bodies.extend([
        catalog.body,
        launch.body,
        refused.body,
        forged.body,
        launched.body,
        page.body,
        list.body,
        grown.body,
        shrink_refused.body,
        confirm.body,
        unconfirmed.body,
        deleted.body,
        refused_out.body,
        out.body,
    ]);
    for body in &bodies {
        assert!(!body.contains(&token), "the token appears in a page:\n{body}");
    }
    let metrics = http_get(admin_port, "/metrics").await;
    assert_eq!(sample(&metrics, "kdfed_console_sign_ins_total"), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "kdfed_console_sign_in_failures_total{reason=\"rejected\"}"), Some(1.0));
    assert!(
        sample(&metrics, "kdfed_console_http_requests_total{route=\"/launch/{namespace}/{app}\",code=\"4xx\"}")
            .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    console.kill();
    let log = std::fs::read_to_string(&console.log).expect("console log");
    assert!(log.contains("signed in"), "{log}");
    assert!(!log.contains(&token), "the token appears in the console's log");

    local_mode(&fleet).await;
    over_tls(&fleet).await;
}

/// With `--tls-cert`/`--tls-key` the console serves HTTPS with that certificate (curl checks
/// it against the CA), and its cookies carry the same flags.
async fn over_tls(fleet: &Fleet) {
    let (crt, key, ca) = kdfed_testbed::certs::webhook_cert(&fleet.bed.cluster("hub").dir.join("pki"), "console-tls")
        .expect("serving certificate");
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let (mut console, port, _) =
        start_console(fleet, "console-tls", &["--tls-cert", crt.as_str(), "--tls-key", key.as_str()]).await;
    let out = std::process::Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(&ca)
        .arg(format!("https://127.0.0.1:{port}/sign-in"))
        .output()
        .expect("run curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("set-cookie: kdfed_sign_in=") && head.contains("secure; samesite=strict"), "{head}");
    console.kill();
}

/// Two versions of an app with a mutable choice in team-a: a cluster of the first changes
/// its choice and moves to the second from its page; a move to an app that does not accept
/// it is refused with the webhook's message. Returns the pages seen.
async fn choices_and_upgrade(port: u16, session: &str, csrf: &str, hub: &Client) -> Vec<String> {
    let apps: Api<KubeDirectorApp> = Api::namespaced(hub.clone(), "team-a");
    for (name, version, from) in [("greeter-1", "1", None), ("greeter-2", "2", Some("greeter-1"))] {
        let mut app = spark_like();
        app["metadata"] = json!({"name": name, "namespace": "team-a"});
        app["spec"]["distroID"] = json!("test/greeter");
        app["spec"]["version"] = json!(version);
        app["spec"]["configChoices"] =
            json!([{"id": "language", "label": {"name": "Language"}, "values": ["en", "fr"], "mutable": true}]);
        if let Some(from) = from {
            app["spec"]["upgradeFrom"] = json!([from]);
        }
        apps.create(&PostParams::default(), &serde_json::from_value(app).expect("app")).await.expect("app");
    }
    let launched = http(
        port,
        "POST",
        "/launch/team-a/greeter-1",
        session,
        &[
            ("csrf", csrf),
            ("name", "greet"),
            ("namespace", "team-a"),
            ("members.controller", "1"),
            ("members.worker", "1"),
            ("choice.language", "en"),
        ],
    )
    .await;
    assert_eq!(launched.status, 303, "{}", launched.body);
    // Upstream's one-change-at-a-time rule refuses a spec change until the previous one was
    // processed (a new cluster: until it has a status), as a user would see on the page; change
    // it once it is Ready, as a user would.
    let mine: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "team-a");
    wait_cluster(&mine, "greet", "Ready", settled).await;
    let page = http(port, "GET", "/clusters/team-a/greet", session, &[]).await;
    assert!(page.body.contains("id=\"choice-language\""), "the mutable choice is offered: {}", page.body);
    assert!(page.body.contains("<option value=\"greeter-2\">"), "the allowed upgrade is offered: {}", page.body);
    let chosen =
        http(port, "POST", "/clusters/team-a/greet/choices", session, &[("csrf", csrf), ("choice.language", "fr")])
            .await;
    assert_eq!(chosen.status, 303, "{}", chosen.body);
    let c = wait_cluster(&mine, "greet", "Ready with the new choice", settled).await;
    assert_eq!(c.spec.config_choices.get("language").map(String::as_str), Some("fr"));
    let wrong =
        http(port, "POST", "/clusters/team-a/greet/upgrade", session, &[("csrf", csrf), ("app", "spark-lite")]).await;
    assert_eq!(wrong.status, 422, "{}", wrong.body);
    assert!(wrong.body.contains("denied") || wrong.body.contains("(rule: "), "the webhook's reason: {}", wrong.body);
    let moved =
        http(port, "POST", "/clusters/team-a/greet/upgrade", session, &[("csrf", csrf), ("app", "greeter-2")]).await;
    assert_eq!(moved.status, 303, "{}", moved.body);
    assert_eq!(mine.get("greet").await.expect("get").spec.app, "greeter-2");
    vec![launched.body, page.body, chosen.body, wrong.body, moved.body]
}

/// `kdfed-console --kubeconfig K`: the kubeconfig's identity without sign-in, on loopback
/// only, forms still CSRF-checked.
async fn local_mode(fleet: &Fleet) {
    let binary = workspace_binary("kdfed-console").expect("console binary");
    let kubeconfig = fleet.bed.cluster("hub").kubeconfig.display().to_string();
    let open = std::process::Command::new(&binary)
        .args(["--kubeconfig", &kubeconfig, "--address", "0.0.0.0:0", "--admin-address", "127.0.0.1:0"])
        .output()
        .expect("run the console");
    assert!(!open.status.success(), "local mode refuses a non-loopback address");
    let said = String::from_utf8_lossy(&open.stderr);
    assert!(said.contains("(rule: local-loopback)"), "{said}");

    let (port, admin_port) = (free_port(), free_port());
    let args: Vec<String> = [
        "--kubeconfig",
        &kubeconfig,
        "--address",
        &format!("127.0.0.1:{port}"),
        "--admin-address",
        &format!("127.0.0.1:{admin_port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut console = Daemon::start("console-local", &binary, &args, &fleet.dir).expect("start the local console");
    wait_ready(admin_port, &mut console).await;
    let sign_in = http(port, "GET", "/sign-in", "", &[]).await;
    assert_eq!((sign_in.status, sign_in.header("location")), (303, Some("/catalog")), "no sign-in locally");
    let catalog = http(port, "GET", "/catalog?namespace=default", "", &[]).await;
    assert_eq!(catalog.status, 200, "{}", catalog.body);
    assert!(catalog.body.contains("Spark lite"), "{}", catalog.body);
    let list = http(port, "GET", "/clusters?namespace=default", "", &[]).await;
    assert!(list.body.contains("payroll-secret"), "the kubeconfig's identity sees default: {}", list.body);
    let form = http(port, "GET", "/launch/default/spark-lite", "", &[]).await;
    assert!(form.body.contains("region=east <small>(1 member, 1 available)</small>"), "{}", form.body);
    let count = http(port, "GET", "/placement.json?label=region%3Deast&labels=", "", &[]).await;
    let count: serde_json::Value = serde_json::from_str(&count.body).expect("json");
    assert_eq!((count["matching"].as_u64(), count["available"].as_u64()), (Some(1), Some(1)), "{count}");
    let none = http(port, "GET", "/placement.json?label=region%3Deast&labels=region%3Dwest", "", &[]).await;
    assert_eq!(none.status, 422, "one key, two values: {}", none.body);
    let forged = http(port, "POST", "/launch/default/spark-lite", "", &[("name", "x"), ("namespace", "default")]).await;
    assert_eq!(forged.status, 403, "a form without the CSRF token is refused locally too");
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(fleet.hub.clone(), "default");
    assert!(clusters.get_opt("x").await.expect("get").is_none());
    console.kill();
    kdfed_console_subcommand(fleet, &kubeconfig).await;
}

/// `kdfed --kubeconfig K console`: the same local mode from the CLI, which prints the URL.
async fn kdfed_console_subcommand(fleet: &Fleet, kubeconfig: &str) {
    let (port, admin_port) = (free_port(), free_port());
    let args: Vec<String> = [
        "--kubeconfig",
        kubeconfig,
        "console",
        "--address",
        &format!("127.0.0.1:{port}"),
        "--admin-address",
        &format!("127.0.0.1:{admin_port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let binary = workspace_binary("kdfed").expect("kdfed binary");
    let mut console = Daemon::start("kdfed-console-cli", &binary, &args, &fleet.dir).expect("start kdfed console");
    wait_ready(admin_port, &mut console).await;
    let said = std::fs::read_to_string(&console.log).expect("its output");
    assert!(said.contains(&format!("kdfed console: http://127.0.0.1:{port} ")), "the URL is printed: {said}");
    let root = http(port, "GET", "/", "", &[]).await;
    assert_eq!((root.status, root.header("location")), (303, Some("/catalog")), "{}", root.body);
    let catalog = http(port, "GET", "/catalog?namespace=default", "", &[]).await;
    assert_eq!(catalog.status, 200, "{}", catalog.body);
    assert!(catalog.body.contains("Spark lite"), "{}", catalog.body);
    console.kill();
    let refused = std::process::Command::new(&binary)
        .args(["--kubeconfig", kubeconfig, "console", "--address", "0.0.0.0:0"])
        .output()
        .expect("run kdfed console");
    assert!(!refused.status.success(), "kdfed console refuses a non-loopback address");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("(rule: local-loopback)"), "{said}");
    let no_context = std::process::Command::new(&binary)
        .args(["--kubeconfig", kubeconfig, "--context", "nope", "console"])
        .output()
        .expect("run kdfed console");
    let said = String::from_utf8_lossy(&no_context.stderr);
    assert!(said.contains("--context \"nope\": no such context"), "{said}");
}

/// Ready for its current spec: the member processed the last change.
fn settled(c: &KubeDirectorCluster) -> bool {
    cond(c, "Ready").is_some_and(|k| k.status == "True" && k.observed_generation == c.metadata.generation)
}
