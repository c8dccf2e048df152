//! Fleet benchmark: N clusters through the whole fleet on real control planes — created on
//! the hub (through its admission webhook), placed, dispatched as Works, built by the
//! members' spokes (KWOK pods), reported back Ready, then deleted and cleaned up on the
//! members. It prints how long each phase took, the latency of each cluster from creation
//! to `Placed` and to `Ready`, and how many API requests and reconciles the hub and the
//! spokes spent per cluster (from their `/metrics`).
//!
//! `cargo build --release --bins && cargo bench -p kdfed-testbed --bench fleet`
//! (`KDFED_BENCH_CLUSTERS`, default 40). The figures are of the whole test bed on this
//! machine — three control planes, KWOK and the kdfed processes sharing its cores — not of
//! kdfed alone; the per-cluster request and reconcile counts are kdfed's own.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kdfed_crds::KubeDirectorCluster;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use support::*;

/// The sum of every series of `family` (all label sets) in an OpenMetrics text.
fn total(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .fold(0.0, |a, b| a + b)
}

/// Counters a process has spent so far: API requests, reconciles.
async fn counters(port: u16, prefix: &str) -> (f64, f64) {
    let text = http_get(port, "/metrics").await;
    (
        total(&text, &format!("kdfed_{prefix}_api_requests_total")),
        total(&text, &format!("kdfed_{prefix}_reconcile_total")),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    println!(
        "  {name:<22} p50 {:>6.2} s   p90 {:>6.2} s   max {:>6.2} s",
        percentile(&values, 0.5),
        percentile(&values, 0.9),
        values.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("KDFED_BENCH_CLUSTERS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let started = Instant::now();
    let fleet = fleet().await;
    println!("fleet up in {:.1} s (3 control planes, hub with its webhook, 2 spokes)", started.elapsed().as_secs_f64());
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let spoke_ports: Vec<u16> = fleet.spoke_admin.values().copied().collect();
    let (hub_requests0, hub_reconciles0) = counters(fleet.hub_admin, "hub").await;
    let mut spoke0 = (0.0, 0.0);
    for p in &spoke_ports {
        let (r, c) = counters(*p, "spoke").await;
        spoke0 = (spoke0.0 + r, spoke0.1 + c);
    }

    // Create (one controller and one worker each, placed by the scheduler: no selector) in
    // one task while this one watches them get placed and become Ready.
    let t0 = Instant::now();
    let creator = {
        let clusters = clusters.clone();
        tokio::spawn(async move {
            let mut created = BTreeMap::new();
            for i in 0..n {
                let name = format!("bench-{i:04}");
                let c: KubeDirectorCluster =
                    serde_json::from_value(cluster(&name, 1, "10m", None)).expect("cluster manifest");
                let before = t0.elapsed().as_secs_f64();
                clusters.create(&PostParams::default(), &c).await.expect("create");
                created.insert(name, before);
            }
            (created, t0.elapsed().as_secs_f64())
        })
    };
    let mut placed = BTreeMap::new();
    let mut ready = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while ready.len() < n {
        assert!(Instant::now() < deadline, "only {}/{n} Ready after 600 s", ready.len());
        let now = t0.elapsed().as_secs_f64();
        for c in clusters.list(&ListParams::default()).await.expect("list").items {
            let name = c.name_any();
            if cond(&c, "Placed").is_some_and(|k| k.status == "True") {
                placed.entry(name.clone()).or_insert(now);
            }
            if ready_with(&c, "2/2") {
                ready.entry(name).or_insert(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (created, create_secs) = creator.await.expect("creator");
    let since_creation = |seen: BTreeMap<String, f64>| -> Vec<f64> {
        seen.into_iter().filter_map(|(name, at)| Some(at - created.get(&name)?)).collect()
    };
    let ready_secs = t0.elapsed().as_secs_f64();
    let mut by_member: BTreeMap<String, usize> = BTreeMap::new();
    for c in clusters.list(&ListParams::default()).await.expect("list").items {
        *by_member.entry(member_of(&c).unwrap_or_else(|| "-".into())).or_default() += 1;
    }

    // Delete them all; they go once their members have cleaned up.
    let t1 = Instant::now();
    for name in created.keys() {
        clusters.delete(name, &DeleteParams::default()).await.expect("delete");
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left = clusters.list(&ListParams::default()).await.expect("list").items.len();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} clusters left after 600 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delete_secs = t1.elapsed().as_secs_f64();

    let (hub_requests, hub_reconciles) = counters(fleet.hub_admin, "hub").await;
    let mut spoke = (0.0, 0.0);
    for p in &spoke_ports {
        let (r, c) = counters(*p, "spoke").await;
        spoke = (spoke.0 + r, spoke.1 + c);
    }
    let per = |a: f64, b: f64| (a - b) / n as f64;
    println!("{n} clusters (2 members each), placed by the scheduler: {by_member:?}");
    println!(
        "  created in {create_secs:.1} s ({:.1}/s through the hub's webhook); all Ready after {ready_secs:.1} s ({:.2} clusters/s); all deleted and cleaned up {delete_secs:.1} s later",
        n as f64 / create_secs,
        n as f64 / ready_secs
    );
    summary("creation → Placed", since_creation(placed));
    summary("creation → Ready", since_creation(ready));
    let hooks = http_get(fleet.hub_admin, "/metrics").await;
    let (sum, count) = (
        total(&hooks, "kdfed_hub_webhook_duration_seconds_sum"),
        total(&hooks, "kdfed_hub_webhook_duration_seconds_count"),
    );
    let by_verb: Vec<String> = ["GET", "WATCH", "POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .filter_map(|verb| {
            let calls: f64 = hooks
                .lines()
                .filter(|l| l.starts_with("kdfed_hub_api_requests_total{") && l.contains(&format!("verb=\"{verb}\"")))
                .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
                .fold(0.0, |a, b| a + b);
            (calls > 0.0).then(|| format!("{verb} {calls:.0}"))
        })
        .collect();
    println!("  hub API requests by verb since start (fleet set-up included): {}", by_verb.join(", "));
    println!("  hub admission: {count:.0} reviews, mean {:.1} ms each (validate and mutate)", 1000.0 * sum / count);
    println!(
        "  per cluster, whole life: hub {:.1} API requests, {:.1} reconciles; spokes {:.1} API requests (member + hub), {:.1} reconciles",
        per(hub_requests, hub_requests0),
        per(hub_reconciles, hub_reconciles0),
        per(spoke.0, spoke0.0),
        per(spoke.1, spoke0.1)
    );
}
