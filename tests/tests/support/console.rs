//! The console's test helpers shared by `console.rs` (over HTTP) and `browser.rs` (a real
//! browser): an HTTP client that keeps headers and cookies, form helpers, the namespaced end
//! user `team-a/alice`, and starting `kdfed-console` in sign-in mode on the fleet's hub.

use std::time::Duration;

use kdfed_crds::KubeDirectorApp;
use kdfed_testbed::{Daemon, workspace_binary};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;

use super::{Fleet, TIMEOUT, free_port, http_get, spark_like};

/// An HTTP answer: status, headers (lowercase names) and body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn cookies(&self) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == "set-cookie").map(|(_, v)| v.as_str()).collect()
    }
}

/// One HTTP/1.1 request to the console on `port`.
pub async fn http(port: u16, method: &str, path: &str, cookie: &str, form: &[(&str, &str)]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body: String = form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if !cookie.is_empty() {
        request.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    if method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the console");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer { status, headers, body: body.to_string() }
}

pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the hidden `csrf` field of a page.
pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().expect("value").to_string()
}

/// `name=value` of the cookie `name` among the answer's Set-Cookie headers.
pub fn cookie_pair(answer: &Answer, name: &str) -> String {
    let set = answer.cookies().into_iter().find(|c| c.starts_with(&format!("{name}="))).expect("cookie set");
    set.split(';').next().expect("pair").to_string()
}

/// The HTML from the field with `id` to the end of its `<div class="field">`.
pub fn field_block<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("field {id} in {page}"));
    let end = page[at..].find("</div>").map_or(page.len(), |e| at + e);
    &page[at..end]
}

/// Creates any object on the hub from its JSON (namespaced when it names a namespace).
pub async fn create(hub: &Client, object: serde_json::Value) {
    let gvk = kube::core::GroupVersionKind::try_from(&kube::core::TypeMeta {
        api_version: object["apiVersion"].as_str().expect("apiVersion").to_string(),
        kind: object["kind"].as_str().expect("kind").to_string(),
    })
    .expect("gvk");
    let resource = ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(hub.clone(), ns, &resource),
        None => Api::all_with(hub.clone(), &resource),
    };
    let object: DynamicObject = serde_json::from_value(object).expect("object");
    api.create(&PostParams::default(), &object).await.expect("create");
}

/// A namespace with an end user (`team-a/alice`) bound to a Role that may read the catalog
/// and Events and manage clusters there, nothing else; returns their token.
pub async fn end_user(hub: &Client) -> String {
    create(hub, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})).await;
    create(
        hub,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "alice", "namespace": "team-a"}}),
    )
    .await;
    create(
        hub,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "app-user", "namespace": "team-a"},
        "rules": [
            {"apiGroups": ["kubedirector.hpe.com"], "resources": ["kubedirectorapps"], "verbs": ["get", "list"]},
            {"apiGroups": ["kubedirector.hpe.com"], "resources": ["kubedirectorclusters"],
             "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}
        ]}),
    )
    .await;
    create(
        hub,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-app-user", "namespace": "team-a"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "app-user"},
        "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": "team-a"}]}),
    )
    .await;
    let mut app = spark_like();
    app["metadata"]["namespace"] = json!("team-a");
    let apps: Api<KubeDirectorApp> = Api::namespaced(hub.clone(), "team-a");
    apps.create(&PostParams::default(), &serde_json::from_value(app).expect("app")).await.expect("app in team-a");
    kdfed_common::tokens::issue(hub, "team-a", "alice", 3600).await.expect("token")
}

pub async fn wait_ready(admin_port: u16, console: &mut Daemon) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while http_get(admin_port, "/readyz").await.trim() != "ok" {
        assert!(console.running(), "the console exited: {}", std::fs::read_to_string(&console.log).unwrap_or_default());
        assert!(tokio::time::Instant::now() < deadline, "the console is not ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts `kdfed-console` in sign-in mode against the fleet's hub (its URL and CA from the
/// hub's kubeconfig), named `name`, with `extra` flags; waits until it is ready and returns
/// it with its port and admin port.
pub async fn start_console(fleet: &Fleet, name: &str, extra: &[&str]) -> (Daemon, u16, u16) {
    let (port, admin_port) = (free_port(), free_port());
    let hub_kubeconfig = fleet.bed.cluster("hub").kubeconfig.display().to_string();
    let mut args: Vec<String> = vec![
        "--hub-kubeconfig".into(),
        hub_kubeconfig,
        "--address".into(),
        format!("127.0.0.1:{port}"),
        "--admin-address".into(),
        format!("127.0.0.1:{admin_port}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let binary = workspace_binary("kdfed-console").expect("console binary");
    let mut console = Daemon::start(name, &binary, &args, &fleet.dir).expect("start the console");
    wait_ready(admin_port, &mut console).await;
    (console, port, admin_port)
}
