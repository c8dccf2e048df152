//! Fleet commands against the hub: members, clusters, catalog.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kdfed_common::conditions::condition;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kube::api::Api;
use kube::{Client, ResourceExt};

fn age(t: Option<jiff::Timestamp>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let secs = jiff::Timestamp::now().duration_since(t).as_secs().max(0);
            match secs {
                s if s < 120 => format!("{s}s"),
                s if s < 7200 => format!("{}m", s / 60),
                s => format!("{}h", s / 3600),
            }
        }
    }
}

fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> =
        (0..rows.first().map_or(0, Vec::len)).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect()
}

/// `kdfed member add`.
pub async fn add(
    client: &Client,
    kubeconfig: Option<&PathBuf>,
    name: &str,
    labels: &[String],
    server: Option<String>,
    token_seconds: i64,
    output: Option<PathBuf>,
) -> Result<()> {
    let mut map = BTreeMap::new();
    for l in labels {
        let (k, v) = l.split_once('=').with_context(|| format!("--label {l:?} must be key=value"))?;
        map.insert(k.to_string(), v.to_string());
    }
    let server = match server {
        Some(s) => s,
        None => {
            let kc = match kubeconfig {
                Some(p) => kube::config::Kubeconfig::read_from(p)?,
                None => kube::config::Kubeconfig::read()?,
            };
            let current = kc.current_context.clone().unwrap_or_default();
            let ctx = kc.contexts.iter().find(|c| c.name == current).and_then(|c| c.context.clone());
            let cluster = ctx.map(|c| c.cluster).unwrap_or_default();
            kc.clusters
                .iter()
                .find(|c| c.name == cluster)
                .and_then(|c| c.cluster.as_ref())
                .and_then(|c| c.server.clone())
                .context("cannot tell the hub's URL from the kubeconfig; pass --server")?
        }
    };
    let member_kubeconfig = kdfed_hub::registry::add_member(client, name, &map, &server, token_seconds).await?;
    match output {
        Some(path) => {
            std::fs::write(&path, member_kubeconfig).with_context(|| format!("write {}", path.display()))?;
            eprintln!("member {name} registered; its spoke credentials are in {}", path.display());
        }
        None => print!("{member_kubeconfig}"),
    }
    Ok(())
}

/// `kdfed member remove`.
pub async fn remove(client: &Client, name: &str, force: bool) -> Result<()> {
    let left = kdfed_hub::registry::remove_member(client, name, force).await?;
    println!("member {name} removed; its credentials no longer work");
    if !left.is_empty() {
        println!(
            "still running there, unmanaged, with their data: {}\ntheir intents wait for a decision (delete them; set federation.kubedirector.hpe.com/orphan=true to let them go)",
            left.join(", ")
        );
    }
    Ok(())
}

/// `kdfed member list`.
pub async fn list_members(client: &Client) -> Result<()> {
    let members = kdfed_hub::registry::list_members(client).await?;
    let mut rows = vec![
        ["NAME", "LABELS", "AVAILABLE", "HEARTBEAT", "CPU (REQ/ALLOC)", "MEMORY (REQ/ALLOC)", "CLUSTERS"]
            .map(String::from)
            .to_vec(),
    ];
    for m in members {
        let name = m.name_any();
        let labels = m.labels().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let status = m.status.clone().unwrap_or_default();
        let mut available =
            condition(&status.conditions, "Available").map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into());
        if m.spec.unschedulable {
            // As kubectl shows a cordoned node.
            available.push_str(",SchedulingDisabled");
        }
        let renewed = kdfed_hub::members::last_renewal(client, &name).await.ok().flatten();
        let cap = status.capacity.unwrap_or_default();
        let pair = |k: &str| {
            let get = |m: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                m.get(k).map(|q| q.0.clone()).unwrap_or_else(|| "-".into())
            };
            format!("{}/{}", get(&cap.requested), get(&cap.allocatable))
        };
        rows.push(vec![
            name,
            if labels.is_empty() { "<none>".into() } else { labels },
            available,
            age(renewed),
            pair("cpu"),
            pair("memory"),
            status.clusters_placed.unwrap_or(0).to_string(),
        ]);
    }
    print!("{}", table(rows));
    Ok(())
}

/// `kdfed cluster list`.
pub async fn list_clusters(client: &Client, namespace: Option<&str>) -> Result<()> {
    let api: Api<KubeDirectorCluster> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut rows = vec![["NAMESPACE", "NAME", "APP", "MEMBER", "STATE", "READY", "STATUS"].map(String::from).to_vec()];
    for c in api.list(&Default::default()).await?.items {
        let status = c.status.clone().unwrap_or_default();
        let summary = status_summary(&status.conditions);
        rows.push(vec![
            c.namespace().unwrap_or_default(),
            c.name_any(),
            c.spec.app.clone(),
            status.placement.map(|p| p.member).unwrap_or_else(|| "-".into()),
            status.state.unwrap_or_else(|| "-".into()),
            status.members_ready.unwrap_or_else(|| "-".into()),
            summary,
        ]);
    }
    print!("{}", table(rows));
    Ok(())
}

/// Longest condition message `kdfed cluster list` shows.
const SUMMARY_MESSAGE: usize = 100;

/// What `kdfed cluster list` says about a cluster's conditions: `Ready` when it is, else
/// the first condition that is not well (in the order a cluster gets them: `Valid`,
/// `Placed`, `MemberAvailable`, `Applied`, `Ready`; `Deleting` first while it goes) as
/// `Type=Status Reason: message`, the message cut to [`SUMMARY_MESSAGE`] characters.
pub fn status_summary(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    let not_well = |type_: &str| {
        condition(conditions, type_)
            .filter(|c| if type_ == "Deleting" { c.status == "True" } else { c.status != "True" })
    };
    let Some(c) = ["Deleting", "Valid", "Placed", "MemberAvailable", "Applied", "Ready"].into_iter().find_map(not_well)
    else {
        return if condition(conditions, "Ready").is_some() { "Ready".into() } else { "-".into() };
    };
    let mut message: String = c.message.chars().take(SUMMARY_MESSAGE).collect();
    if c.message.chars().count() > SUMMARY_MESSAGE {
        message.push('…');
    }
    format!("{}={} {}: {message}", c.type_, c.status, c.reason)
}

/// `kdfed catalog list`.
pub async fn list_catalog(client: &Client) -> Result<()> {
    let api: Api<KubeDirectorApp> = Api::all(client.clone());
    let mut rows = vec![["NAMESPACE", "NAME", "LABEL", "VERSION", "ROLES"].map(String::from).to_vec()];
    for a in api.list(&Default::default()).await?.items {
        let roles = a.spec.roles.iter().map(|r| format!("{}({})", r.id, r.cardinality)).collect::<Vec<_>>().join(",");
        rows.push(vec![
            a.namespace().unwrap_or_default(),
            a.name_any(),
            a.spec.label.name.clone(),
            a.spec.version.clone(),
            roles,
        ]);
    }
    if rows.len() == 1 {
        bail!("the catalog is empty");
    }
    print!("{}", table(rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn c(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    #[test]
    fn the_summary_names_the_first_condition_that_is_not_well() {
        assert_eq!(status_summary(&[]), "-");
        let healthy = [
            c("Valid", "True", "Valid", ""),
            c("Placed", "True", "Scheduled", ""),
            c("Ready", "True", "Configured", ""),
        ];
        assert_eq!(status_summary(&healthy), "Ready");
        let refused = [
            c("Placed", "True", "Scheduled", "placed on east"),
            c("Applied", "False", "ApplyFailed", "member east cannot apply it: denied"),
            c("Ready", "False", "Reconciling", "state pending"),
        ];
        assert_eq!(status_summary(&refused), "Applied=False ApplyFailed: member east cannot apply it: denied");
        let stale = [
            c("MemberAvailable", "Unknown", "HeartbeatMissed", "no heartbeat"),
            c("Ready", "Unknown", "MemberUnavailable", "x"),
        ];
        assert_eq!(status_summary(&stale), "MemberAvailable=Unknown HeartbeatMissed: no heartbeat");
        let going = [c("Deleting", "True", "MemberGone", "member east is gone"), c("Ready", "True", "Configured", "")];
        assert_eq!(status_summary(&going), "Deleting=True MemberGone: member east is gone");
        let long = [c("Placed", "False", "Unschedulable", &"x".repeat(150))];
        assert_eq!(status_summary(&long).chars().count(), "Placed=False Unschedulable: ".len() + 101);
    }
}
