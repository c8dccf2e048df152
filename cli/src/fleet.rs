//! Fleet commands against the hub: members, clusters, catalog.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kdfed_common::conditions::condition;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster, KubeDirectorMember};
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::output::{self, Format, Table};

/// Where the fleet commands connect: kubectl's `--kubeconfig`, `--context` and `-n`.
pub struct Target {
    /// `--kubeconfig` (default: `$KUBECONFIG`, `~/.kube/config` or in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// `--context` (default: the kubeconfig's current context).
    pub context: Option<String>,
    /// `-n`.
    pub namespace: Option<String>,
}

impl Target {
    /// A client for the kubeconfig and context given.
    pub async fn client(&self) -> Result<Client> {
        if self.context.is_none() {
            return Ok(kdfed_common::client(self.kubeconfig.as_deref()).await?);
        }
        Ok(Client::try_from(self.config().await?)?)
    }

    /// The client configuration for the kubeconfig and context given (without either, the
    /// environment's: `$KUBECONFIG`, `~/.kube/config` or in-cluster).
    pub async fn config(&self) -> Result<kube::Config> {
        let (kubeconfig, origin) = match (&self.kubeconfig, &self.context) {
            (Some(p), _) => (kube::config::Kubeconfig::read_from(p), p.display().to_string()),
            (None, None) => {
                return kube::Config::infer().await.context("no kubeconfig: $KUBECONFIG, ~/.kube/config or in-cluster");
            }
            (None, Some(_)) => (kube::config::Kubeconfig::read(), "$KUBECONFIG or ~/.kube/config".to_string()),
        };
        let kubeconfig = kubeconfig.with_context(|| format!("cannot read kubeconfig {origin}"))?;
        if let Some(context) = &self.context
            && !kubeconfig.contexts.iter().any(|c| &c.name == context)
        {
            let known: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
            bail!("--context {context:?}: no such context in {origin} (it has: {})", known.join(", "));
        }
        let options = kube::config::KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| format!("cannot configure a client from {origin}"))
    }
}

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

/// `kdfed member add`.
pub async fn add(
    client: &Client,
    target: &Target,
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
            let kc = match &target.kubeconfig {
                Some(p) => kube::config::Kubeconfig::read_from(p)?,
                None => kube::config::Kubeconfig::read()?,
            };
            let current = target.context.clone().or_else(|| kc.current_context.clone()).unwrap_or_default();
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
pub async fn list_members(client: &Client, names: &[String], format: Format) -> Result<()> {
    let members = output::only_named(kdfed_hub::registry::list_members(client).await?, names, "kubedirectormember")?;
    let mut table = Table::new(
        vec![
            "NAME",
            "LABELS",
            "AVAILABLE",
            "HEARTBEAT",
            "CPU (REQ/ALLOC)",
            "MEMORY (REQ/ALLOC)",
            "CLUSTERS",
            "KUBERNETES",
            "SPOKE",
            "TAINTS",
            "AGE",
        ],
        4,
    );
    if format.is_table() {
        for m in &members {
            let renewed = kdfed_hub::members::last_renewal(client, &m.name_any()).await.ok().flatten();
            table.rows.push(member_row(m, renewed));
        }
    }
    output::print_list(&members, &table, format)
}

/// A member's row of `kdfed member list`; `renewed` is when its heartbeat was last renewed.
fn member_row(m: &KubeDirectorMember, renewed: Option<jiff::Timestamp>) -> Vec<String> {
    let labels = m.labels().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let status = m.status.clone().unwrap_or_default();
    let mut available =
        condition(&status.conditions, "Available").map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into());
    if m.spec.unschedulable {
        // As kubectl shows a cordoned node.
        available.push_str(",SchedulingDisabled");
    }
    let cap = status.capacity.unwrap_or_default();
    let pair = |k: &str| {
        let get = |m: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
            m.get(k).map(|q| q.0.clone()).unwrap_or_else(|| "-".into())
        };
        format!("{}/{}", get(&cap.requested), get(&cap.allocatable))
    };
    let taints = m.spec.taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>().join(",");
    vec![
        m.name_any(),
        if labels.is_empty() { "<none>".into() } else { labels },
        available,
        age(renewed),
        pair("cpu"),
        pair("memory"),
        status.clusters_placed.unwrap_or(0).to_string(),
        status.kubernetes_version.unwrap_or_else(|| "-".into()),
        status.spoke_version.unwrap_or_else(|| "-".into()),
        if taints.is_empty() { "<none>".into() } else { taints },
        created(m),
    ]
}

/// How long ago an object was created.
fn created<K: ResourceExt>(object: &K) -> String {
    age(object.creation_timestamp().map(|t| t.0))
}

/// `kdfed cluster list`, and with `watch` its changes after it.
pub async fn list_clusters(
    client: &Client,
    namespace: Option<&str>,
    names: &[String],
    format: Format,
    watch: bool,
) -> Result<()> {
    let api: Api<KubeDirectorCluster> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api.list(&Default::default()).await?;
    let clusters = output::only_named(list.items, names, "kubedirectorcluster")?;
    // The CHOICES column only when some cluster has config choices.
    let choices = clusters.iter().any(|c| !choices_of(c).is_empty());
    let mut table = cluster_table(choices);
    table.rows = clusters.iter().map(|c| cluster_row(c, choices)).collect();
    output::print_list(&clusters, &table, format)?;
    if watch {
        watch_clusters(&api, names, format, &clusters, choices).await?;
    }
    Ok(())
}

/// The columns of `kdfed cluster list`, with CHOICES after READY when `choices`.
fn cluster_table(choices: bool) -> Table {
    let mut header = vec!["NAMESPACE", "NAME", "APP", "MEMBER", "STATE", "READY", "STATUS", "SERVICE", "AGE"];
    if choices {
        header.insert(CHOICES_COLUMN, "CHOICES");
    }
    Table::new(header, 2)
}

/// Where `kdfed cluster list` puts the CHOICES column.
const CHOICES_COLUMN: usize = 6;

/// A cluster's config choices as `cluster list` shows them: those in effect (status), else
/// those its spec names, as `id=value,...`.
fn choices_of(c: &KubeDirectorCluster) -> String {
    let active = c.status.as_ref().map(|s| &s.config_choices).filter(|m| !m.is_empty());
    kdfed_crds::choices::described(active.unwrap_or(&c.spec.config_choices))
}

/// A cluster's row of `kdfed cluster list` (with its choices when `choices`).
fn cluster_row(c: &KubeDirectorCluster, choices: bool) -> Vec<String> {
    let mut row = base_row(c);
    if choices {
        let said = choices_of(c);
        row.insert(CHOICES_COLUMN, if said.is_empty() { "-".into() } else { said });
    }
    row
}

fn base_row(c: &KubeDirectorCluster) -> Vec<String> {
    let status = c.status.clone().unwrap_or_default();
    vec![
        c.namespace().unwrap_or_default(),
        c.name_any(),
        c.spec.app.clone(),
        status.placement.map(|p| p.member).unwrap_or_else(|| "-".into()),
        // A live upgrade under way shows its progress (`Upgrading 2/3`) as the state.
        status.upgrade.as_ref().and_then(|u| u.progress()).or(status.state).unwrap_or_else(|| "-".into()),
        status.members_ready.unwrap_or_else(|| "-".into()),
        status_summary(&status.conditions),
        status.cluster_service.unwrap_or_else(|| "-".into()),
        created(c),
    ]
}

/// Follows the clusters of `api` after the list just `printed`: prints a cluster again when
/// its row (or, with `-o json|yaml|name`, its resource version) changes, and with the
/// state `Deleted` when it goes. The watch starts with a fresh list (as it does again when
/// it expires), of which only what changed since is printed.
async fn watch_clusters(
    api: &Api<KubeDirectorCluster>,
    names: &[String],
    format: Format,
    printed: &[KubeDirectorCluster],
    choices: bool,
) -> Result<()> {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::{self, Event};

    let key = |c: &KubeDirectorCluster| (c.namespace().unwrap_or_default(), c.name_any());
    let mut last: BTreeMap<(String, String), Vec<String>> =
        printed.iter().map(|c| (key(c), cluster_row(c, choices))).collect();
    let mut seen_versions: BTreeMap<(String, String), String> =
        printed.iter().map(|c| (key(c), c.resource_version().unwrap_or_default())).collect();
    // Errors (an API server restart, an expired watch) are said and retried with backoff.
    let mut stream = std::pin::pin!(watcher::watcher(api.clone(), watcher::Config::default()).default_backoff());
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                eprintln!("kdfed: watch kubedirectorclusters: {e}; retrying");
                continue;
            }
        };
        let (cluster, deleted) = match event {
            Event::Apply(c) | Event::InitApply(c) => (c, false),
            Event::Delete(c) => (c, true),
            Event::Init | Event::InitDone => continue,
        };
        if !names.is_empty() && !names.contains(&cluster.name_any()) {
            continue;
        }
        let mut row = cluster_row(&cluster, choices);
        if deleted {
            row[4] = "Deleted".into();
        }
        let k = key(&cluster);
        let rv = cluster.resource_version().unwrap_or_default();
        let changed = if format.is_table() {
            last.get(&k).is_none_or(|before| row_changed(before, &row))
        } else {
            deleted || seen_versions.get(&k) != Some(&rv)
        };
        seen_versions.insert(k.clone(), rv);
        if !changed {
            continue;
        }
        last.insert(k, row.clone());
        let text = match format {
            Format::Table | Format::Wide => {
                let mut one = cluster_table(choices);
                one.rows.push(row);
                one.render(format, false)
            }
            Format::Name => output::name_of(&cluster) + "\n",
            Format::Json | Format::Yaml => output::one_text(&output::object_value(&cluster)?, format)?,
        };
        crate::write_stdout(&text)?;
    }
    Ok(())
}

/// Whether a cluster's watched row differs from the one printed `before`. The AGE column
/// (the last) moves with the clock alone, so it never makes a row worth printing again.
fn row_changed(before: &[String], row: &[String]) -> bool {
    let without_age = |r: &[String]| r.len().saturating_sub(1);
    before[..without_age(before)] != row[..without_age(row)]
}

/// What `kdfed cluster list` says about a cluster's conditions (shared with the console:
/// [`kdfed_common::conditions::summary`]).
pub fn status_summary(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    kdfed_common::conditions::summary(conditions)
}

/// `kdfed catalog list`.
pub async fn list_catalog(client: &Client, namespace: Option<&str>, names: &[String], format: Format) -> Result<()> {
    let api: Api<KubeDirectorApp> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let apps = output::only_named(api.list(&Default::default()).await?.items, names, "kubedirectorapp")?;
    if apps.is_empty() && format.is_table() {
        bail!("the catalog is empty");
    }
    let mut table = Table::new(vec!["NAMESPACE", "NAME", "LABEL", "VERSION", "ROLES", "DISTRO", "AGE"], 2);
    for a in &apps {
        let roles = a.spec.roles.iter().map(|r| format!("{}({})", r.id, r.cardinality)).collect::<Vec<_>>().join(",");
        table.rows.push(vec![
            a.namespace().unwrap_or_default(),
            a.name_any(),
            a.spec.label.name.clone(),
            a.spec.version.clone(),
            roles,
            a.spec.distro_id.clone(),
            created(a),
        ]);
    }
    output::print_list(&apps, &table, format)
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
    fn a_watched_row_is_printed_again_for_a_change_but_not_for_its_age_alone() {
        let row = |state: &str, age: &str| -> Vec<String> {
            ["default", "alpha", "spark", "-", state, "-", "-", "-", age].map(String::from).to_vec()
        };
        assert_eq!(cluster_table(false).header.last(), Some(&"AGE"), "AGE is the last column");
        assert!(!row_changed(&row("-", "9s"), &row("-", "10s")));
        assert!(row_changed(&row("-", "9s"), &row("configured", "9s")));
        assert!(row_changed(&row("-", "9s"), &row("configured", "12s")));
    }

    #[test]
    fn the_choices_column_shows_the_choices_in_effect_and_only_when_some_cluster_has_them() {
        let mut c: KubeDirectorCluster =
            serde_json::from_value(serde_json::json!({"apiVersion": "kubedirector.hpe.com/v1beta1",
                "kind": "KubeDirectorCluster", "metadata": {"name": "sp", "namespace": "d"},
                "spec": {"app": "spark", "roles": [], "configChoices": {"jupyter": "false"}}}))
            .expect("cluster");
        assert_eq!(cluster_row(&c, false).len(), cluster_table(false).header.len());
        assert_eq!(cluster_table(true).header[CHOICES_COLUMN], "CHOICES");
        assert_eq!(cluster_row(&c, true)[CHOICES_COLUMN], "jupyter=false", "as asked until the status says");
        let status = c.status.get_or_insert_default();
        status.config_choices = [("jupyter", "false"), ("logLevel", "INFO")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(cluster_row(&c, true)[CHOICES_COLUMN], "jupyter=false,logLevel=INFO");
        c.spec.config_choices.clear();
        c.status = None;
        assert_eq!(cluster_row(&c, true)[CHOICES_COLUMN], "-");
    }

    #[test]
    fn a_cluster_being_upgraded_shows_its_progress_as_its_state() {
        let mut cluster = KubeDirectorCluster::new("db", Default::default());
        let state = |c: &KubeDirectorCluster| cluster_row(c, false)[4].clone();
        assert_eq!(state(&cluster), "-");
        let status = cluster.status.get_or_insert_default();
        status.state = Some("updating".into());
        status.upgrade = Some(kdfed_crds::cluster::UpgradeStatus {
            phase: kdfed_crds::upgrade::PHASE_UPGRADING.into(),
            upgraded_members: vec!["a".into(), "b".into()],
            total_members: Some(3),
            ..Default::default()
        });
        assert_eq!(state(&cluster), "Upgrading 2/3");
        if let Some(u) = cluster.status.as_mut().and_then(|s| s.upgrade.as_mut()) {
            u.phase = kdfed_crds::upgrade::PHASE_COMPLETED.into();
        }
        assert_eq!(state(&cluster), "updating", "a finished upgrade shows the director's state");
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
