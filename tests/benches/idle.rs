//! Idle-cost benchmark (issue #13): the release `kdfed-spoke --standalone` (the director as
//! a drop-in KubeDirector) on one test-bed control plane with KWOK nodes, idle with 1 and
//! then with 20 configured 3-member clusters of `examples/apps/minimal.yaml`. For each: a
//! fresh director process, all clusters `configured`, 30 s of settling, then an idle
//! window over which it reads from /proc the director's CPU (millicores) and RSS at the
//! end, and from its `/metrics` the API requests by verb and resource and the reconciles by
//! controller. Prints one table. Not a test: nothing is asserted about the figures.
//!
//! `cargo build --release -p kdfed-spoke --bin kdfed-spoke &&
//!  cargo bench -p kdfed-testbed --bench idle -- --idle 300` (default 300 s; a short
//! window is fine for trying). Other processes on the machine share its cores: the figures
//! are upper bounds.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::{Daemon, Testbed, workspace_binary};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;
use support::http_get;

const SETTLE: Duration = Duration::from_secs(30);
const MEMBERS: i64 = 3;

fn example(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(rel);
    serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read example")).expect("parse example")
}

/// The value of `--NAME VALUE` among the bench's arguments.
fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

/// `--idle SECONDS` (default 300).
fn idle_window() -> Duration {
    let secs = flag("--idle").map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("--idle: seconds, not {v:?}")));
    Duration::from_secs(secs.unwrap_or(300))
}

/// `--binary PATH`: another build of `kdfed-spoke` to measure (default: the release build
/// beside this bench).
fn spoke_binary() -> std::path::PathBuf {
    flag("--binary").map(std::path::PathBuf::from).unwrap_or_else(|| {
        workspace_binary("kdfed-spoke").expect("release kdfed-spoke: cargo build --release -p kdfed-spoke")
    })
}

/// CPU seconds (user + system) a process used so far.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command (which may hold spaces) start at the state, field 3.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().expect("getconf");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(100.0)
}

/// A field of /proc/PID/status (`VmRSS` in kB, `Threads`).
fn status_field(pid: i32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Every series of `family` with its labels (the text between the braces) and value.
fn series(text: &str, family: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(family)?.strip_prefix('{'))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once("} ")?;
            Some((labels.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Counters of the director's `/metrics`: requests to its API server by verb and
/// resource, reconciles by controller.
async fn counters(admin: u16) -> BTreeMap<String, f64> {
    let text = http_get(admin, "/metrics").await;
    let mut out = BTreeMap::new();
    for (labels, v) in series(&text, "kdfed_spoke_api_resource_requests_total") {
        let label = |k: &str| {
            labels.split(',').find_map(|p| p.strip_prefix(&format!("{k}=\""))?.strip_suffix('"')).unwrap_or("")
        };
        *out.entry(format!("{} {}", label("verb"), label("resource"))).or_default() += v;
    }
    for (labels, v) in series(&text, "kdfed_spoke_reconcile_total") {
        out.insert(format!("reconcile {}", labels.replace("controller=", "").replace('"', "")), v);
    }
    out
}

fn cluster(name: &str) -> KubeDirectorCluster {
    let mut c = example("clusters/minimal.yaml");
    c["metadata"]["name"] = name.into();
    c["spec"]["roles"][0]["members"] = MEMBERS.into();
    c["spec"]["roles"][0]["resources"]["requests"]["memory"] = "16Mi".into();
    c["spec"]["roles"][0]["resources"]["requests"]["cpu"] = "10m".into();
    // No fleet here: the placement of the example is for the hub.
    c["spec"].as_object_mut().expect("spec").remove("placement");
    serde_json::from_value(c).expect("cluster manifest")
}

async fn wait_configured(client: &Client, n: usize) -> f64 {
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    loop {
        let list = clusters.list(&ListParams::default()).await.expect("list clusters").items;
        let done = list.iter().filter(|c| c.status.as_ref().and_then(|s| s.state.as_deref()) == Some("configured"));
        if done.count() == n {
            return started.elapsed().as_secs_f64();
        }
        assert!(started.elapsed() < Duration::from_secs(900), "clusters not configured after 900 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One row of the table.
struct Row {
    clusters: usize,
    cpu_millicores: f64,
    rss_mb: f64,
    /// Of which anonymous (heap, stacks) and file-backed (the binary's code pages).
    anon_mb: f64,
    file_mb: f64,
    threads: f64,
    counts: BTreeMap<String, f64>,
    configured_after: f64,
}

/// A fresh director over `n` configured clusters (creating the missing ones), measured
/// over `idle` after settling.
async fn measure(bed: &Testbed, client: &Client, n: usize, idle: Duration) -> Row {
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    let existing = clusters.list(&ListParams::default()).await.expect("list").items.len();
    for i in existing..n {
        clusters.create(&PostParams::default(), &cluster(&format!("idle-{i:02}"))).await.expect("create cluster");
    }
    let admin = kdfed_testbed::free_port().expect("port");
    let c = bed.cluster("idle");
    let args: Vec<String> = vec![
        "--standalone".into(),
        "--kubeconfig".into(),
        c.kubeconfig.display().to_string(),
        "--admin-address".into(),
        format!("127.0.0.1:{admin}"),
    ];
    let binary = spoke_binary();
    let mut director = Daemon::start(&format!("director-{n}"), &binary, &args, &c.dir).expect("start the director");
    let configured_after = wait_configured(client, n).await;
    tokio::time::sleep(SETTLE).await;
    let pid = director.pid();
    let (before, cpu0, t0) = (counters(admin).await, cpu_seconds(pid), Instant::now());
    tokio::time::sleep(idle).await;
    let (after, cpu1, window) = (counters(admin).await, cpu_seconds(pid), t0.elapsed().as_secs_f64());
    let row = Row {
        clusters: n,
        cpu_millicores: (cpu1 - cpu0) / window * 1000.0,
        rss_mb: status_field(pid, "VmRSS") / 1024.0,
        anon_mb: status_field(pid, "RssAnon") / 1024.0,
        file_mb: status_field(pid, "RssFile") / 1024.0,
        threads: status_field(pid, "Threads"),
        counts: after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0))).collect(),
        configured_after,
    };
    assert!(director.running(), "the director stopped; see {}", director.log.display());
    director.kill();
    row
}

fn print(rows: &[Row], idle: Duration) {
    let minutes = idle.as_secs_f64() / 60.0;
    println!(
        "\n{} --standalone, idle {} s after {} s of settling",
        spoke_binary().display(),
        idle.as_secs(),
        SETTLE.as_secs()
    );
    let mut header = format!("{:<44}", "");
    for r in rows {
        header += &format!("{:>16}", format!("{} cluster(s)", r.clusters));
    }
    println!("{header}");
    let line = |name: &str, f: &dyn Fn(&Row) -> String| {
        let mut l = format!("{name:<44}");
        for r in rows {
            l += &format!("{:>16}", f(r));
        }
        println!("{l}");
    };
    line("all configured after (s)", &|r| format!("{:.1}", r.configured_after));
    line("CPU (mCPU)", &|r| format!("{:.2}", r.cpu_millicores));
    line("RSS at the end (MB)", &|r| format!("{:.1}", r.rss_mb));
    line("  of which anonymous (MB)", &|r| format!("{:.1}", r.anon_mb));
    line("  of which file-backed: code pages (MB)", &|r| format!("{:.1}", r.file_mb));
    line("threads", &|r| format!("{}", r.threads));
    let keys: std::collections::BTreeSet<&String> = rows.iter().flat_map(|r| r.counts.keys()).collect();
    for key in keys {
        if rows.iter().all(|r| r.counts.get(key).copied().unwrap_or(0.0) == 0.0) {
            continue;
        }
        let label = if key.starts_with("reconcile ") { format!("{key} /min") } else { format!("API {key} /min") };
        line(&label, &|r| format!("{:.2}", r.counts.get(key).copied().unwrap_or(0.0) / minutes));
    }
    let requests = |r: &Row| r.counts.iter().filter(|(k, _)| !k.starts_with("reconcile ")).map(|(_, v)| v).sum::<f64>();
    line("API requests, all /min", &|r| format!("{:.2}", requests(r) / minutes));
}

#[tokio::main]
async fn main() {
    let idle = idle_window();
    let bed = Testbed::start(&["idle"]).await.expect("test bed");
    let client = bed.client("idle").await.expect("client");
    kdfed_common::crds::install(client.clone()).await.expect("CRDs");
    let apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "default");
    let app = serde_json::from_value(example("apps/minimal.yaml")).expect("app");
    apps.create(&PostParams::default(), &app).await.expect("create app");
    let mut rows = Vec::new();
    for n in [1, 20] {
        let row = measure(&bed, &client, n, idle).await;
        eprintln!("{n} cluster(s): {:.2} mCPU, {:.1} MB", row.cpu_millicores, row.rss_mb);
        rows.push(row);
    }
    print(&rows, idle);
}
