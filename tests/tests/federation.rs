//! End to end: a hub and two members (east, west) on real control planes, the real
//! `kdfed-hub` and `kdfed-spoke` processes joined with scoped credentials. Clusters are
//! placed by labels and capacity, built on the member, reported back, kept honest while a
//! member is down, and cleaned up on deletion.
//!
//! The hub and the spokes run as the ServiceAccounts of deploy/hub and deploy/spoke with
//! exactly those bases' RBAC, and the hub serves and registers its admission webhook, so
//! every API call and admission review of the fleet goes through what is shipped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kdfed_crds::federation::{KubeDirectorMember, KubeDirectorWork};
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster, KubeDirectorConfig};
use kdfed_testbed::{Daemon, NodePool};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};

mod support;
use support::*;

#[tokio::test]
async fn clusters_are_placed_built_reported_and_cleaned_up_across_the_fleet() {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");

    // The hub's config: its admission generates the hub's secret-key master key.
    let hub_configs: Api<KubeDirectorConfig> = Api::namespaced(hub.clone(), "kdfed-system");
    let config = json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorConfig",
        "metadata": {"name": "kd-global-config"}, "spec": {}});
    let hub_key = hub_configs
        .create(&PostParams::default(), &serde_json::from_value(config).expect("config"))
        .await
        .expect("hub config")
        .spec
        .master_encryption_key
        .expect("the hub's admission generated a master key");

    // Placed by label on west only, built there, visible from the hub.
    let mut analytics = cluster("analytics", 1, "1", Some(("region", "west")));
    analytics["spec"]["roles"][0]["secretKeys"] = json!([{"name": "db-password", "value": "hunter2"}]);
    let analytics: KubeDirectorCluster = serde_json::from_value(analytics).expect("c");
    clusters.create(&PostParams::default(), &analytics).await.expect("create");
    let c = wait_cluster(&clusters, "analytics", "ready on west", |c| ready_with(c, "2/2")).await;
    assert_eq!(member_of(&c).as_deref(), Some("west"));
    assert_eq!(c.status.as_ref().and_then(|s| s.placement.as_ref()).map(|p| p.epoch), Some(1));
    for t in ["Placed", "Applied", "MemberAvailable", "Valid"] {
        assert_eq!(cond(&c, t).map(|k| k.status.as_str()), Some("True"), "{t}: {:#?}", c.status);
    }
    let west = fleet.bed.client("west").await.expect("west");
    let east = fleet.bed.client("east").await.expect("east");
    let local: Api<KubeDirectorCluster> = Api::namespaced(west.clone(), "default");
    assert!(local.get_opt("analytics").await.expect("get").is_some(), "built on west");
    assert!(
        Api::<KubeDirectorCluster>::namespaced(east.clone(), "default")
            .get_opt("analytics")
            .await
            .expect("get")
            .is_none(),
        "not on east"
    );
    // Secret keys: sealed with the hub's key on the hub, and with the member's own key on the
    // member (west serves no webhook: hub sync seals them and gives west's config a key).
    let sealed_on = |c: &KubeDirectorCluster| {
        let key = c.spec.roles[0].secret_keys.first().cloned().expect("a secret key");
        assert_eq!(key.value, None, "{}: a secret key stored in the clear", c.name_any());
        key.encrypted_value.expect("encryptedValue")
    };
    let on_hub = sealed_on(&c);
    assert_eq!(kdfed_common::secretkeys::decrypt(&hub_key, &on_hub).expect("hub key"), "hunter2");
    let member_key = |client: Client| async move {
        Api::<KubeDirectorConfig>::namespaced(client, "kdfed-system")
            .get("kd-global-config")
            .await
            .expect("the member's config")
            .spec
            .master_encryption_key
            .expect("the member's master key")
    };
    let west_key = member_key(west.clone()).await;
    assert_ne!(west_key, hub_key, "each member has its own key");
    let west_sealed = sealed_on(&local.get("analytics").await.expect("copy"));
    assert_eq!(kdfed_common::secretkeys::decrypt(&west_key, &west_sealed).expect("west key"), "hunter2");

    // East serves the member webhook: it admits hub sync's sealed copy (the spoke's own
    // identity) and still refuses a ciphertext anyone else sets by hand.
    let mut vault = cluster("vault", 1, "100m", Some(("region", "east")));
    vault["spec"]["roles"][1]["secretKeys"] = json!([{"name": "token", "value": "t0ken"}]);
    clusters.create(&PostParams::default(), &serde_json::from_value(vault.clone()).expect("c")).await.expect("vault");
    wait_cluster(&clusters, "vault", "ready on east", |c| ready_with(c, "2/2")).await;
    let east_local: Api<KubeDirectorCluster> = Api::namespaced(east.clone(), "default");
    let east_copy = east_local.get("vault").await.expect("vault on east");
    let east_sealed = east_copy.spec.roles[1].secret_keys[0].encrypted_value.clone().expect("sealed on east");
    assert_eq!(east_copy.spec.roles[1].secret_keys[0].value, None);
    let east_key = member_key(east.clone()).await;
    assert_eq!(kdfed_common::secretkeys::decrypt(&east_key, &east_sealed).expect("east key"), "t0ken");
    let mut forged = vault.clone();
    forged["metadata"]["name"] = json!("forged");
    forged["spec"]["roles"][1]["secretKeys"] = json!([{"name": "token", "encryptedValue": east_sealed}]);
    match east_local.create(&PostParams::default(), &serde_json::from_value(forged).expect("c")).await {
        Err(kube::Error::Api(e)) => {
            assert!(e.message.contains("manually setting secret key (token) encrypted value is forbidden"), "{e:?}")
        }
        other => panic!("east's webhook admitted a hand-made ciphertext: {other:?}"),
    }
    clusters.delete("vault", &DeleteParams::default()).await.expect("delete vault");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while clusters.get_opt("vault").await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "vault not cleaned up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A member's own policy refuses a copy the hub accepted (east's config requires a Secret
    // name prefix; the hub's does not): the user sees why on the hub, and the copy is
    // applied once the member's policy allows it.
    let east_configs: Api<KubeDirectorConfig> = Api::namespaced(east.clone(), "kdfed-system");
    let prefix = |p: Option<&str>| Patch::Merge(json!({"spec": {"requiredSecretPrefix": p}}));
    east_configs.patch("kd-global-config", &PatchParams::default(), &prefix(Some("east-"))).await.expect("prefix");
    let strict = cluster("strict", 1, "100m", Some(("region", "east")));
    clusters.create(&PostParams::default(), &serde_json::from_value(strict).expect("c")).await.expect("strict");
    let c = wait_cluster(&clusters, "strict", "refused by east", |c| {
        cond(c, "Applied").is_some_and(|k| k.reason == "ApplyFailed")
    })
    .await;
    let message = cond(&c, "Applied").map(|k| k.message.clone()).unwrap_or_default();
    assert!(message.starts_with("member east cannot apply it: "), "{message}");
    assert!(message.contains("does not have the required name prefix(east-)"), "{message}");
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(hub.clone(), "default");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let list = events.list(&ListParams::default().fields("involvedObject.name=strict")).await.expect("events");
        if list
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ApplyFailed") && e.type_.as_deref() == Some("Warning"))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no ApplyFailed Event on strict");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    east_configs.patch("kd-global-config", &PatchParams::default(), &prefix(None)).await.expect("no prefix");
    let c = wait_cluster(&clusters, "strict", "applied once allowed", |c| ready_with(c, "2/2")).await;
    assert_eq!(cond(&c, "Applied").map(|k| k.reason.as_str()), Some("Applied"));
    clusters.delete("strict", &DeleteParams::default()).await.expect("delete strict");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while clusters.get_opt("strict").await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "strict not cleaned up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // An object of the cluster that east's API server refuses (a node affinity operator
    // Kubernetes does not know): the hub shows the director's error, and the cluster can
    // still be deleted.
    let mut sideways = cluster("sideways", 1, "100m", Some(("region", "east")));
    for role in [0, 1] {
        sideways["spec"]["roles"][role]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Sideways", "values": ["a"]}]}]}}});
    }
    clusters.create(&PostParams::default(), &serde_json::from_value(sideways).expect("c")).await.expect("sideways");
    let c = wait_cluster(&clusters, "sideways", "refused by east's API server", |c| {
        cond(c, "Applied").is_some_and(|k| k.reason == "ApplyFailed")
    })
    .await;
    let message = cond(&c, "Applied").map(|k| k.message.clone()).unwrap_or_default();
    assert!(message.starts_with("member east cannot apply it: apply statefulset "), "{message}");
    assert!(message.contains("Invalid value: \"Sideways\""), "{message}");
    clusters.delete("sideways", &DeleteParams::default()).await.expect("delete sideways");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while clusters.get_opt("sideways").await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "sideways not cleaned up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let copied = Api::<Secret>::namespaced(west.clone(), "default").get_opt("spark-creds").await.expect("get");
    assert!(copied.is_some(), "the referenced Secret travels with the Work");
    assert!(Api::<Secret>::namespaced(east.clone(), "default").get_opt("spark-creds").await.expect("get").is_none());

    // The hub's metrics show the fleet.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let text = http_get(fleet.hub_admin, "/metrics").await;
        let ok = sample(&text, r#"kdfed_hub_members{condition="Available",status="True"}"#) == Some(2.0)
            && sample(&text, r#"kdfed_hub_clusters{app="spark-lite",member="west",state="configured"}"#) == Some(1.0)
            && sample(&text, r#"kdfed_hub_member_allocatable_cpu_cores{member="west"}"#) == Some(32.0)
            && sample(&text, "kdfed_hub_leader").is_some_and(|v| v == 1.0)
            && sample(&text, "kdfed_hub_placement_latency_seconds_count").is_some_and(|v| v >= 1.0);
        if ok {
            assert!(text.contains("# EOF"), "OpenMetrics text");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "hub metrics incomplete:\n{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(http_get(fleet.hub_admin, "/readyz").await.trim(), "ok");

    // Expanding on the hub expands on west.
    let patch = Patch::Json::<()>(
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/roles/1/members", "value": 3}])).expect("patch"),
    );
    clusters.patch("analytics", &PatchParams::default(), &patch).await.expect("expand");
    wait_cluster(&clusters, "analytics", "expanded", |c| ready_with(c, "4/4")).await;
    let pods: Api<Pod> = Api::namespaced(west.clone(), "default");
    let lp = ListParams::default().labels("kubedirector.hpe.com/kdcluster=analytics");
    assert_eq!(pods.list(&lp).await.expect("pods").items.len(), 4);
    // The re-applied copy kept its ciphertext: an unchanged secret key is not re-encrypted.
    assert_eq!(sealed_on(&local.get("analytics").await.expect("copy")), west_sealed);

    // A cluster that connects to analytics runs beside it on west (connections are resolved
    // on the member; east has more room), and the ConfigMap it connects to travels with its
    // Work, follows changes on the hub (the member's connections hash moves) and goes with it.
    let configmaps: Api<ConfigMap> = Api::namespaced(hub.clone(), "default");
    let tuning: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "tuning", "labels": {"kubedirector.hpe.com/cmType": "tuning"}},
        "data": {"mode": "fast"}
    }))
    .expect("configmap");
    configmaps.create(&PostParams::default(), &tuning).await.expect("create configmap");
    let mut dashboard = cluster("dashboard", 1, "1", None);
    dashboard["spec"]["connections"] = json!({"clusters": ["analytics"], "configmaps": ["tuning"]});
    clusters.create(&PostParams::default(), &serde_json::from_value(dashboard).expect("c")).await.expect("create");
    let c = wait_cluster(&clusters, "dashboard", "ready beside analytics", |c| ready_with(c, "2/2")).await;
    assert_eq!(member_of(&c).as_deref(), Some("west"));
    let first_hash = c.status.as_ref().and_then(|s| s.last_connection_hash.clone()).expect("connections hash");
    let west_configmaps: Api<ConfigMap> = Api::namespaced(west.clone(), "default");
    let copy = west_configmaps.get("tuning").await.expect("the connected ConfigMap is on west");
    assert_eq!(copy.labels().get("kubedirector.hpe.com/cmType").map(String::as_str), Some("tuning"));
    assert_eq!(copy.data.as_ref().and_then(|d| d.get("mode")).map(String::as_str), Some("fast"));
    configmaps
        .patch("tuning", &PatchParams::default(), &Patch::Merge(json!({"data": {"mode": "safe"}})))
        .await
        .expect("change the configmap");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let copy = west_configmaps.get("tuning").await.expect("copy");
        let mode = copy.data.as_ref().and_then(|d| d.get("mode")).cloned();
        let hash = clusters.get("dashboard").await.expect("dashboard").status.and_then(|s| s.last_connection_hash);
        if mode.as_deref() == Some("safe") && hash.as_ref().is_some_and(|h| h != &first_hash) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "change not propagated: mode {mode:?}, hash {hash:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    clusters.delete("dashboard", &DeleteParams::default()).await.expect("delete dashboard");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while clusters.get_opt("dashboard").await.expect("get").is_some()
        || west_configmaps.get_opt("tuning").await.expect("get").is_some()
    {
        assert!(tokio::time::Instant::now() < deadline, "dashboard or its ConfigMap copy not cleaned up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A cordoned member keeps what it runs and receives nothing new, even with more room.
    let platform = fleet.platform_team().await;
    kdfed_hub::registry::set_cordoned(&platform, "east", true).await.expect("cordon east");
    clusters
        .create(&PostParams::default(), &serde_json::from_value(cluster("aside", 1, "100m", None)).expect("c"))
        .await
        .expect("aside");
    let c = wait_cluster(&clusters, "aside", "placed", |c| member_of(c).is_some()).await;
    assert_eq!(member_of(&c).as_deref(), Some("west"), "not on the cordoned member");
    let pinned = cluster("pinned", 1, "100m", Some(("region", "east")));
    clusters.create(&PostParams::default(), &serde_json::from_value(pinned).expect("c")).await.expect("pinned");
    let c =
        wait_cluster(&clusters, "pinned", "unschedulable", |c| cond(c, "Placed").is_some_and(|k| k.status == "False"))
            .await;
    let reason = cond(&c, "Placed").map(|k| k.message.clone()).unwrap_or_default();
    assert_eq!(reason, "0/2 members fit: 1 did not match placement.memberSelector, 1 cordoned (spec.unschedulable)");
    kdfed_hub::registry::set_cordoned(&platform, "east", false).await.expect("uncordon east");
    let c = wait_cluster(&clusters, "pinned", "placed once uncordoned", |c| member_of(c).is_some()).await;
    assert_eq!(member_of(&c).as_deref(), Some("east"));
    for name in ["aside", "pinned"] {
        clusters.delete(name, &DeleteParams::default()).await.expect("delete");
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while clusters.get_opt("aside").await.expect("get").is_some()
        || clusters.get_opt("pinned").await.expect("get").is_some()
    {
        assert!(tokio::time::Instant::now() < deadline, "aside/pinned not cleaned up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Too large for any member: not placed, with the reason; placed once capacity is added.
    let big: KubeDirectorCluster = serde_json::from_value(cluster("big", 1, "20", None)).expect("c");
    clusters.create(&PostParams::default(), &big).await.expect("create big");
    let c = wait_cluster(&clusters, "big", "unschedulable", |c| cond(c, "Placed").is_some_and(|k| k.status == "False"))
        .await;
    let reason = cond(&c, "Placed").map(|k| k.message.clone()).unwrap_or_default();
    assert_eq!(reason, "0/2 members fit: 2 had insufficient free CPU, memory or GPU");
    fleet
        .bed
        .add_nodes("east", &NodePool { count: 2, cpu: "32".into(), ..NodePool::default() })
        .await
        .expect("add nodes");
    let c = wait_cluster(&clusters, "big", "placed on east", |c| ready_with(c, "2/2")).await;
    assert_eq!(member_of(&c).as_deref(), Some("east"));

    // Spokes renew their own tokens and keep working with the new ones.
    let token_file = PathBuf::from(format!("{}.token", fleet.join_file("west").display()));
    let first_token = std::fs::read_to_string(&token_file).expect("token file");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while std::fs::read_to_string(&token_file).expect("token file") == first_token {
        assert!(tokio::time::Instant::now() < deadline, "west's spoke did not renew its token");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let renewed = std::fs::read_to_string(&token_file).expect("token file");
    let kc = Kubeconfig::read_from(fleet.join_file("west")).expect("join");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
    config.auth_info.token = Some(renewed.trim().to_string().into());
    let renewed_client = Client::try_from(config).expect("client");
    let own_works: Api<KubeDirectorWork> = Api::namespaced(renewed_client, "kdfed-member-west");
    assert!(own_works.list(&ListParams::default()).await.is_ok(), "the renewed token works");

    // A member only sees its own namespace on the hub.
    let east_identity = fleet.member_client("east").await;
    let own: Api<KubeDirectorWork> = Api::namespaced(east_identity.clone(), "kdfed-member-east");
    assert_eq!(own.list(&ListParams::default()).await.expect("own works").items.len(), 1);
    let forbidden = |r: Result<kube::core::ObjectList<KubeDirectorWork>, kube::Error>| matches!(r, Err(kube::Error::Api(e)) if e.code == 403);
    assert!(forbidden(
        Api::<KubeDirectorWork>::namespaced(east_identity.clone(), "kdfed-member-west")
            .list(&ListParams::default())
            .await
    ));
    let secret_list = Api::<Secret>::namespaced(east_identity.clone(), "default").list(&ListParams::default()).await;
    assert!(
        matches!(secret_list, Err(kube::Error::Api(e)) if e.code == 403),
        "Secrets outside its namespace are hidden"
    );
    let other_member = Api::<KubeDirectorMember>::all(east_identity.clone()).get("west").await;
    assert!(matches!(other_member, Err(kube::Error::Api(e)) if e.code == 403), "other members are hidden");

    // East's spoke dies: east goes Unknown within the grace, and its cluster's status says
    // the member data is stale instead of showing it as current.
    fleet.spokes.get_mut("east").expect("east spoke").kill();
    wait_member(&hub, "east", "Unknown").await;
    let c = wait_cluster(&clusters, "big", "stale", |c| cond(c, "Ready").is_some_and(|k| k.status == "Unknown")).await;
    let ready = cond(&c, "Ready").expect("Ready");
    assert_eq!(ready.reason, "MemberUnavailable");
    assert!(ready.message.contains("last seen at"), "{}", ready.message);
    assert_eq!(cond(&c, "MemberAvailable").map(|k| k.status.as_str()), Some("Unknown"));
    // Apps keep running on the member during the outage.
    let east_pods: Api<Pod> = Api::namespaced(east.clone(), "default");
    assert_eq!(
        east_pods
            .list(&ListParams::default().labels("kubedirector.hpe.com/kdcluster=big"))
            .await
            .expect("pods")
            .items
            .len(),
        2
    );
    fleet.start_spoke("east");
    wait_member(&hub, "east", "True").await;
    wait_cluster(&clusters, "big", "ready again", |c| ready_with(c, "2/2")).await;

    // Deleting an intent cleans up on its member, then the intent goes.
    clusters.delete("analytics", &DeleteParams::default()).await.expect("delete");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let intent = clusters.get_opt("analytics").await.expect("get");
        let copy = local.get_opt("analytics").await.expect("get");
        let left = pods.list(&lp).await.expect("pods").items.len();
        if intent.is_none() && copy.is_none() && left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not cleaned up: intent {} copy {} pods {left}",
            intent.is_some(),
            copy.is_some()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let works: Api<KubeDirectorWork> = Api::namespaced(hub.clone(), "kdfed-member-west");
    assert!(works.list(&ListParams::default()).await.expect("works").items.is_empty());

    // Removing a member that still runs a cluster is refused without --force, naming it;
    // with --force it goes and its credentials are revoked at once.
    let platform = fleet.platform_team().await;
    let refused = kdfed_hub::registry::remove_member(&platform, "east", false).await.expect_err("big runs on east");
    let refused = refused.to_string();
    assert!(refused.contains("default/big") && refused.contains("--force"), "{refused}");
    assert!(Api::<KubeDirectorMember>::all(hub.clone()).get_opt("east").await.expect("get").is_some());
    let left = kdfed_hub::registry::remove_member(&platform, "east", true).await.expect("remove east");
    assert!(left.contains(&"default/big".to_string()), "{left:?}");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match own.list(&ListParams::default()).await {
            Err(kube::Error::Api(e)) if e.code == 401 || e.code == 403 => break,
            other => assert!(tokio::time::Instant::now() < deadline, "east's token still works: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The platform team's role is no cluster-admin: no Secrets outside what it manages.
    let secrets = Api::<Secret>::namespaced(platform.clone(), "default").list(&ListParams::default()).await;
    assert!(matches!(secrets, Err(kube::Error::Api(e)) if e.code == 403), "the fleet admin reads Secrets");
    // A member registered by an earlier kdfed (a per-member Role, and a RoleBinding to it,
    // whose roleRef cannot change) is moved to the shared kdfed-member role on re-registration.
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "kdfed-member-legacy"}})).expect("ns");
    Api::all(hub.clone()).create(&PostParams::default(), &ns).await.expect("legacy namespace");
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "kdfed-spoke"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}))
    .expect("role");
    Api::namespaced(hub.clone(), "kdfed-member-legacy").create(&PostParams::default(), &role).await.expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "kdfed-spoke"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kdfed-spoke"},
        "subjects": [{"kind": "ServiceAccount", "name": "kdfed-spoke", "namespace": "kdfed-member-legacy"}]}))
    .expect("binding");
    let bindings: Api<RoleBinding> = Api::namespaced(hub.clone(), "kdfed-member-legacy");
    bindings.create(&PostParams::default(), &binding).await.expect("binding");
    kdfed_hub::registry::add_member(&platform, "legacy", &BTreeMap::new(), &fleet.bed.cluster("hub").server, 600)
        .await
        .expect("re-register a member of an earlier kdfed");
    let moved = bindings.get("kdfed-spoke").await.expect("binding");
    assert_eq!((moved.role_ref.kind.as_str(), moved.role_ref.name.as_str()), ("ClusterRole", "kdfed-member"));
    let old_role = Api::<Role>::namespaced(hub.clone(), "kdfed-member-legacy").get_opt("kdfed-spoke").await;
    assert!(old_role.expect("get").is_none(), "the per-member Role is gone");
    kdfed_hub::registry::remove_member(&platform, "legacy", false).await.expect("remove legacy");

    // A cluster on a member that is gone waits for an explicit decision before it goes.
    clusters.delete("big", &DeleteParams::default()).await.expect("delete big");
    let c = wait_cluster(&clusters, "big", "waiting for a gone member", |c| {
        cond(c, "Deleting").is_some_and(|k| k.reason == "MemberGone")
    })
    .await;
    let message = cond(&c, "Deleting").map(|k| k.message.clone()).unwrap_or_default();
    assert!(message.contains("federation.kubedirector.hpe.com/orphan=true"), "{message}");
    let orphan = Patch::Merge(json!({"metadata": {"annotations": {"federation.kubedirector.hpe.com/orphan": "true"}}}));
    clusters.patch("big", &PatchParams::default(), &orphan).await.expect("orphan");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while clusters.get_opt("big").await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "orphaned intent not released");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_second_hub_replica_takes_over_when_the_leader_dies() {
    let mut fleet = fleet_with_hubs(2).await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let first: KubeDirectorCluster = serde_json::from_value(cluster("first", 1, "1", None)).expect("c");
    clusters.create(&PostParams::default(), &first).await.expect("create");
    wait_cluster(&clusters, "first", "ready", |c| ready_with(c, "2/2")).await;

    // Exactly one replica leads; kill it.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(hub.clone(), "kdfed-system");
    let holder = leases.get("kdfed-hub").await.expect("lease").spec.and_then(|s| s.holder_identity).expect("holder");
    let leader =
        fleet.hubs.iter().position(|h| holder.ends_with(&format!("-{}", h.pid()))).expect("leader is one of ours");
    fleet.hubs[leader].kill();

    // The other replica takes over and the work goes on, without duplicates. (An admission
    // call the API server had in flight to the dead replica, or on a connection to it, fails
    // once, with failurePolicy Fail: a user retries, and so does the test.)
    let second: KubeDirectorCluster = serde_json::from_value(cluster("second", 1, "1", None)).expect("c");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match clusters.create(&PostParams::default(), &second).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 500 && e.message.contains("failed calling webhook") => {
                assert!(tokio::time::Instant::now() < deadline, "admission never recovered: {}", e.message);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("create: {e}"),
        }
    }
    wait_cluster(&clusters, "second", "ready under the new leader", |c| ready_with(c, "2/2")).await;
    let new_holder =
        leases.get("kdfed-hub").await.expect("lease").spec.and_then(|s| s.holder_identity).expect("holder");
    assert_ne!(new_holder, holder);
    let patch = Patch::Json::<()>(
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/roles/1/members", "value": 2}])).expect("p"),
    );
    clusters.patch("first", &PatchParams::default(), &patch).await.expect("expand first");
    wait_cluster(&clusters, "first", "expanded", |c| ready_with(c, "3/3")).await;
    let mut works = Vec::new();
    for m in ["east", "west"] {
        let api: Api<KubeDirectorWork> = Api::namespaced(hub.clone(), &format!("kdfed-member-{m}"));
        works.extend(
            api.list(&ListParams::default()).await.expect("works").items.into_iter().map(|w| w.spec.origin.name),
        );
    }
    works.sort();
    assert_eq!(works, vec!["first".to_string(), "second".to_string()], "one Work per cluster");
}

#[tokio::test]
async fn a_failover_cluster_moves_and_the_old_copy_is_fenced_with_its_data_kept() {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let mut manifest = cluster("mobile", 1, "1", None);
    manifest["spec"]["roles"][0]["storage"] = json!({"size": "1Gi"});
    manifest["spec"]["placement"] = json!({
        "preferences": [{"weight": 50, "preference": {"matchLabels": {"region": "west"}}}],
        "failover": {"policy": "Reschedule", "afterSeconds": 10}
    });
    clusters.create(&PostParams::default(), &serde_json::from_value(manifest).expect("c")).await.expect("create");
    let c = wait_cluster(&clusters, "mobile", "ready on west", |c| ready_with(c, "2/2")).await;
    assert_eq!(member_of(&c).as_deref(), Some("west"));
    let controller =
        c.status.as_ref().and_then(|s| s.roles.iter().find(|r| r.id == "controller")).expect("role").members[0].clone();
    let pvc = controller.pvc.clone().expect("pvc");

    // West's spoke stays down: after the grace and afterSeconds the cluster moves to east.
    fleet.spokes.get_mut("west").expect("west").kill();
    let c = wait_cluster(&clusters, "mobile", "failed over to east", |c| {
        member_of(c).as_deref() == Some("east") && ready_with(c, "2/2")
    })
    .await;
    assert_eq!(c.status.as_ref().and_then(|s| s.placement.as_ref()).map(|p| p.epoch), Some(2));
    assert_eq!(cond(&c, "Placed").map(|k| k.reason.as_str()), Some("FailedOver"));

    // West comes back: its copy is fenced (scaled to zero, PVC kept) and never runs beside east's.
    fleet.start_spoke("west");
    let west = fleet.bed.client("west").await.expect("west");
    let pods: Api<Pod> = Api::namespaced(west.clone(), "default");
    let lp = ListParams::default().labels("kubedirector.hpe.com/kdcluster=mobile");
    let local: Api<KubeDirectorCluster> = Api::namespaced(west.clone(), "default");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let copy = local.get_opt("mobile").await.expect("get").expect("the old copy is kept, not deleted");
        let fenced = copy.annotations().get("federation.kubedirector.hpe.com/fenced").is_some_and(|v| v == "true");
        let running = pods.list(&lp).await.expect("pods").items.len();
        if fenced && running == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "west copy not fenced: fenced={fenced} pods={running}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(west.clone(), "default");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let claim = claims.get_opt(&pvc).await.expect("get pvc").expect("the old member keeps its PVC");
    assert!(claim.metadata.deletion_timestamp.is_none());
    let member = wait_member(&hub, "west", "True").await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut reported = member.status.map(|s| s.fenced_clusters).unwrap_or_default();
    while !reported.contains(&"default/mobile".to_string()) {
        assert!(tokio::time::Instant::now() < deadline, "west does not report its fenced copy: {reported:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        reported = Api::<KubeDirectorMember>::all(hub.clone())
            .get("west")
            .await
            .expect("m")
            .status
            .map(|s| s.fenced_clusters)
            .unwrap_or_default();
    }
    // The platform team sees it in the hub's metrics (alert KdfedFencedClusters).
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let text = http_get(fleet.hub_admin, "/metrics").await;
        if sample(&text, r#"kdfed_hub_member_fenced_clusters{member="west"}"#) == Some(1.0) {
            assert_eq!(sample(&text, r#"kdfed_hub_member_fenced_clusters{member="east"}"#), Some(0.0));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the hub's metrics do not show west's fenced copy");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let east = fleet.bed.client("east").await.expect("east");
    let east_pods: Api<Pod> = Api::namespaced(east, "default");
    assert_eq!(east_pods.list(&lp).await.expect("pods").items.len(), 2, "the new placement keeps running");
}

/// The link between a spoke and the hub's API server that a test cuts to simulate a
/// network partition.
type Partition = Link;

#[tokio::test]
async fn a_partitioned_member_keeps_running_and_resyncs_without_touching_anything() {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    // Route east's spoke to the hub through a link the test can cut.
    let link = Partition::to(&fleet.bed.cluster("hub").server).await;
    fleet.spokes.get_mut("east").expect("east").kill();
    let join = fleet.join_file("east");
    let text = std::fs::read_to_string(&join).expect("join");
    let text = text.replace(&fleet.bed.cluster("hub").server, &format!("https://127.0.0.1:{}", link.port));
    std::fs::write(&join, text).expect("rewrite join");
    fleet.start_spoke("east");
    wait_member(&hub, "east", "True").await;

    seed_catalog(&hub).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    clusters
        .create(
            &PostParams::default(),
            &serde_json::from_value(cluster("steady", 2, "1", Some(("region", "east")))).expect("c"),
        )
        .await
        .expect("create");
    wait_cluster(&clusters, "steady", "ready on east", |c| ready_with(c, "3/3")).await;
    let east = fleet.bed.client("east").await.expect("east");
    let local: Api<KubeDirectorCluster> = Api::namespaced(east.clone(), "default");
    let generation = local.get("steady").await.expect("copy").metadata.generation;
    let pods: Api<Pod> = Api::namespaced(east.clone(), "default");
    let lp = ListParams::default().labels("kubedirector.hpe.com/kdcluster=steady");
    let uids = |list: Vec<Pod>| {
        list.into_iter().map(|p| (p.name_any(), p.metadata.uid.unwrap_or_default())).collect::<BTreeMap<_, _>>()
    };
    let before = uids(pods.list(&lp).await.expect("pods").items);
    assert_eq!(before.len(), 3);

    // Cut the link: the hub marks east unavailable and the cluster's data stale...
    link.cut();
    wait_member(&hub, "east", "Unknown").await;
    wait_cluster(&clusters, "steady", "stale", |c| cond(c, "Ready").is_some_and(|k| k.status == "Unknown")).await;
    // ...while the member keeps running, and a restarted spoke keeps reconciling locally.
    fleet.spokes.get_mut("east").expect("east").kill();
    fleet.start_spoke("east");
    let victim = before.keys().next().expect("a pod").clone();
    pods.delete(&victim, &DeleteParams::default()).await.expect("kill a pod");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let now = uids(pods.list(&lp).await.expect("pods").items);
        let copy = local.get("steady").await.expect("copy");
        let configured = copy
            .status
            .as_ref()
            .is_some_and(|s| s.state.as_deref() == Some("configured") && s.members_ready.as_deref() == Some("3/3"));
        if now.len() == 3 && now.get(&victim) != before.get(&victim) && configured {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the member did not repair itself while partitioned: {now:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Heal: east is available again, the status is current, and nothing unchanged was touched.
    link.heal();
    wait_member(&hub, "east", "True").await;
    wait_cluster(&clusters, "steady", "ready again", |c| ready_with(c, "3/3")).await;
    let after = uids(pods.list(&lp).await.expect("pods").items);
    for (name, uid) in &before {
        if *name != victim {
            assert_eq!(after.get(name), Some(uid), "{name} was restarted by the resync");
        }
    }
    assert_eq!(
        local.get("steady").await.expect("copy").metadata.generation,
        generation,
        "the local spec was not rewritten"
    );
}

/// libfaketime (Debian's `libfaketime`): preloaded, it shifts a process's wall clock.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Waits until every certificate under `dir` is older than `age`, so that a process whose
/// clock runs `age` behind still finds them valid.
async fn wait_until_certificates_are_older_than(dir: &std::path::Path, age: Duration) {
    fn newest(dir: &std::path::Path) -> Option<std::time::SystemTime> {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                if path.is_dir() {
                    newest(&path)
                } else if path.extension().is_some_and(|x| x == "crt" || x == "pem") {
                    e.metadata().ok()?.modified().ok()
                } else {
                    None
                }
            })
            .max()
    }
    let newest = newest(dir).expect("the test bed has certificates");
    let wait = (newest + age).duration_since(std::time::SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait).await;
}

fn claim_uids(claims: Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim>) -> BTreeMap<String, String> {
    claims
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| (c.name_any(), c.metadata.uid.unwrap_or_default()))
        .collect()
}

/// What [`a_partitioned_failover_cluster`] leaves for further steps.
struct Partitioned {
    fleet: Fleet,
    link: Partition,
}

/// A cluster with failover (`mobile`, afterSeconds 10) and one without (`steady`) run on
/// west, whose spoke reaches the hub through a link the test cuts; the spoke keeps running
/// (with its wall clock `skew` seconds off, through libfaketime, if given). West stops
/// `mobile` on its own before the hub places it on east: at no sampled moment do both copies
/// have pods, the hub's new Work is created after west's pods are gone, the data PVCs are
/// kept, `steady` keeps running, and after the link is back the old copy stays fenced.
async fn a_partitioned_failover_cluster(skew: Option<i64>) -> Partitioned {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    let link = Partition::to(&fleet.bed.cluster("hub").server).await;
    fleet.spokes.get_mut("west").expect("west").kill();
    let join = fleet.join_file("west");
    let text = std::fs::read_to_string(&join).expect("join");
    let text = text.replace(&fleet.bed.cluster("hub").server, &format!("https://127.0.0.1:{}", link.port));
    std::fs::write(&join, text).expect("rewrite join");
    let mut envs = Vec::new();
    if let Some(skew) = skew {
        wait_until_certificates_are_older_than(&fleet.dir, Duration::from_secs(skew.unsigned_abs() + 5)).await;
        envs = vec![
            ("LD_PRELOAD".to_string(), LIBFAKETIME.to_string()),
            ("FAKETIME".to_string(), format!("{skew:+}")),
            ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
        ];
    }
    fleet.start_spoke_with_env("west", &envs);
    if let Some(skew) = skew {
        // The spoke really runs on the skewed clock: it writes it into its Lease.
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(hub.clone(), "kdfed-member-west");
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let lease = leases.get("kdfed-spoke").await.expect("lease");
            let renewed = lease.spec.and_then(|s| s.renew_time).expect("renewTime").0;
            let offset = renewed.duration_since(k8s_openapi::jiff::Timestamp::now()).as_secs();
            if (offset - skew).abs() <= 3 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "west's Lease is {offset}s off, not {skew}s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    wait_member(&hub, "west", "True").await;
    if skew.is_some() {
        // The heartbeat age the platform team watches is the hub's own measure too.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let text = http_get(fleet.hub_admin, "/metrics").await;
            let age = sample(&text, r#"kdfed_hub_member_heartbeat_age_seconds{member="west"}"#);
            if age.is_some_and(|a| a < 3.0) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "west's heartbeat age on the hub: {age:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    seed_catalog(&hub).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let mut mobile = cluster("mobile", 1, "1", None);
    mobile["spec"]["roles"][0]["storage"] = json!({"size": "1Gi"});
    mobile["spec"]["placement"] = json!({
        "preferences": [{"weight": 50, "preference": {"matchLabels": {"region": "west"}}}],
        "failover": {"policy": "Reschedule", "afterSeconds": 10}
    });
    clusters.create(&PostParams::default(), &serde_json::from_value(mobile).expect("c")).await.expect("create");
    let steady = cluster("steady", 1, "1", Some(("region", "west")));
    clusters.create(&PostParams::default(), &serde_json::from_value(steady).expect("c")).await.expect("create");
    let c = wait_cluster(&clusters, "mobile", "ready on west", |c| ready_with(c, "2/2")).await;
    assert_eq!(member_of(&c).as_deref(), Some("west"));
    wait_cluster(&clusters, "steady", "ready on west", |c| ready_with(c, "2/2")).await;

    let west = fleet.bed.client("west").await.expect("west");
    let east = fleet.bed.client("east").await.expect("east");
    let mobile_pods = ListParams::default().labels("kubedirector.hpe.com/kdcluster=mobile");
    let steady_pods = ListParams::default().labels("kubedirector.hpe.com/kdcluster=steady");
    let west_pods: Api<Pod> = Api::namespaced(west.clone(), "default");
    let east_pods: Api<Pod> = Api::namespaced(east.clone(), "default");
    let west_sets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(west.clone(), "default");
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(west.clone(), "default");
    let data = claim_uids(claims.list(&ListParams::default()).await.expect("pvcs").items);
    assert!(!data.is_empty(), "mobile has a data PVC on west");
    let pod_uids = |list: Vec<Pod>| {
        list.into_iter().map(|p| (p.name_any(), p.metadata.uid.unwrap_or_default())).collect::<BTreeMap<_, _>>()
    };
    let steady_before = pod_uids(west_pods.list(&steady_pods).await.expect("pods").items);
    assert_eq!(steady_before.len(), 2);
    let east_works: Api<KubeDirectorWork> = Api::namespaced(hub.clone(), "kdfed-member-east");

    // Cut west's link to the hub; its spoke keeps running.
    let cut = tokio::time::Instant::now();
    link.cut();
    let mut fenced: Option<(Duration, k8s_openapi::jiff::Timestamp)> = None;
    let mut placed: Option<(Duration, k8s_openapi::jiff::Timestamp)> = None;
    let mut east_started: Option<Duration> = None;
    let mut samples = 0;
    loop {
        let on_west = west_pods.list(&mobile_pods).await.expect("west pods").items.len();
        let on_east = east_pods.list(&mobile_pods).await.expect("east pods").items.len();
        let work = east_works.get_opt("default.mobile").await.expect("work");
        let (t, now) = (cut.elapsed(), k8s_openapi::jiff::Timestamp::now());
        samples += 1;
        assert!(
            on_west == 0 || on_east == 0,
            "two live copies {t:?} after the cut: {on_west} pods on west, {on_east} on east"
        );
        if on_west == 0 && fenced.is_none() {
            fenced = Some((t, now));
        }
        assert!(on_west == 0 || fenced.is_none(), "west's copy started again {t:?} after the cut while partitioned");
        if let Some(w) = &work
            && placed.is_none()
        {
            let created = w.metadata.creation_timestamp.as_ref().expect("created").0;
            placed = Some((t, created));
        }
        if on_east > 0 && east_started.is_none() {
            east_started = Some(t);
        }
        let c = clusters.get("mobile").await.expect("mobile");
        if member_of(&c).as_deref() == Some("east") && ready_with(&c, "2/2") {
            break;
        }
        assert!(cut.elapsed() < TIMEOUT, "mobile did not fail over to east: {:#?}", c.status);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (fenced_after, fenced_at) = fenced.expect("west's copy went down");
    let (placed_after, work_created) = placed.expect("the hub placed mobile on east");
    eprintln!(
        "partition (west clock skew {skew:?} s): west's copy down {fenced_after:?} after the cut, the hub's Work on \
         east seen {placed_after:?} after (created {work_created}, west down at {fenced_at}), east's pods from \
         {east_started:?}; {samples} samples, never both running"
    );
    assert!(fenced_after < placed_after, "west was fenced only after the hub placed the new copy");
    // The hub's own record agrees: its new Work (creation time in whole seconds, rounded
    // down) was created after west's copy was observed down.
    assert!(fenced_at < work_created, "east's Work created at {work_created}, west's copy down only at {fenced_at}");
    // West stops on its own clock (afterSeconds 10 - margin 5 s, plus the director's work)...
    assert!(fenced_after < Duration::from_secs(15), "west took {fenced_after:?} to fence its copy");
    // ...and the hub waits grace (5 s) + afterSeconds (10 s) + skew margin (10 s) from the
    // last renewal it saw (at most a heartbeat interval and a poll before the cut).
    assert!(placed_after >= Duration::from_secs(20), "the hub failed over after only {placed_after:?}");

    // While partitioned: west's copy is self-fenced, scaled to zero, its data kept, and the
    // cluster without failover runs on, untouched.
    let local: Api<KubeDirectorCluster> = Api::namespaced(west.clone(), "default");
    let copy = local.get("mobile").await.expect("the copy is kept");
    assert!(copy.annotations().contains_key("federation.kubedirector.hpe.com/self-fenced"), "{:?}", copy.annotations());
    let fenced_condition = copy.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Fenced"));
    assert_eq!(fenced_condition.map(|c| (c.status.as_str(), c.reason.as_str())), Some(("True", "HubUnreachable")));
    assert_eq!(copy.status.as_ref().and_then(|s| s.state.as_deref()), Some("fenced"));
    let sets = west_sets.list(&mobile_pods).await.expect("statefulsets").items;
    assert!(!sets.is_empty());
    for sts in &sets {
        assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(0), "{} not scaled to zero", sts.name_any());
    }
    assert_eq!(claim_uids(claims.list(&ListParams::default()).await.expect("pvcs").items), data, "data PVCs kept");
    assert_eq!(pod_uids(west_pods.list(&steady_pods).await.expect("pods").items), steady_before);
    assert!(fleet.spokes.get_mut("west").expect("west").running(), "west's spoke stayed up");

    // The link comes back: the Work is gone, so the old copy stays fenced for good.
    link.heal();
    wait_member(&hub, "west", "True").await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let copy = local.get("mobile").await.expect("copy");
        let annotation = copy.annotations().get("federation.kubedirector.hpe.com/fenced").cloned();
        assert_eq!(west_pods.list(&mobile_pods).await.expect("pods").items.len(), 0, "west's copy restarted");
        if annotation.as_deref() == Some("true") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "west's copy not marked fenced after the link came back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // It stays down (sampled for longer than the spoke's lift confirmation).
    for _ in 0..20 {
        assert_eq!(west_pods.list(&mobile_pods).await.expect("pods").items.len(), 0, "west's copy restarted");
        assert_eq!(east_pods.list(&mobile_pods).await.expect("pods").items.len(), 2, "east's copy keeps running");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for sts in west_sets.list(&mobile_pods).await.expect("statefulsets").items {
        assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(0));
    }
    assert_eq!(claim_uids(claims.list(&ListParams::default()).await.expect("pvcs").items), data, "data PVCs kept");
    assert_eq!(pod_uids(west_pods.list(&steady_pods).await.expect("pods").items), steady_before);
    wait_cluster(&clusters, "steady", "ready again", |c| ready_with(c, "2/2")).await;
    Partitioned { fleet, link }
}

#[tokio::test]
async fn a_partitioned_member_stops_its_failover_copy_before_the_hub_places_the_new_one() {
    let Partitioned { mut fleet, link } = a_partitioned_failover_cluster(None).await;
    let hub = fleet.hub.clone();
    // A short partition: west fences a copy on its own clock, the link comes back before
    // the hub's failover time, and the same copy runs again on west with its data.
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let mut patient = cluster("patient", 1, "1", None);
    patient["spec"]["roles"][0]["storage"] = json!({"size": "1Gi"});
    patient["spec"]["placement"] = json!({
        "memberSelector": {"matchLabels": {"region": "west"}},
        "failover": {"policy": "Reschedule", "afterSeconds": 30}
    });
    clusters.create(&PostParams::default(), &serde_json::from_value(patient).expect("c")).await.expect("create");
    wait_cluster(&clusters, "patient", "ready on west", |c| ready_with(c, "2/2")).await;
    let west = fleet.bed.client("west").await.expect("west");
    let pods: Api<Pod> = Api::namespaced(west.clone(), "default");
    let lp = ListParams::default().labels("kubedirector.hpe.com/kdcluster=patient");
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(west.clone(), "default");
    let data = claim_uids(claims.list(&ListParams::default()).await.expect("pvcs").items);

    let cut = tokio::time::Instant::now();
    link.cut();
    while !pods.list(&lp).await.expect("pods").items.is_empty() {
        assert!(cut.elapsed() < TIMEOUT, "west did not fence patient");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let fenced_after = cut.elapsed();
    link.heal();
    eprintln!("short partition: patient fenced {fenced_after:?} after the cut; link back");
    // The hub would fail over only 5 + 30 + 10 s after the last renewal it saw.
    assert!(fenced_after < Duration::from_secs(40), "fenced only after {fenced_after:?}");
    // The spoke lifts its fence once the hub confirms the placement; the copy runs again.
    let local: Api<KubeDirectorCluster> = Api::namespaced(west.clone(), "default");
    let healed = tokio::time::Instant::now();
    loop {
        let copy = local.get("patient").await.expect("copy");
        let lifted = !copy.annotations().contains_key("federation.kubedirector.hpe.com/self-fenced");
        let configured = copy
            .status
            .as_ref()
            .is_some_and(|s| s.state.as_deref() == Some("configured") && s.members_ready.as_deref() == Some("2/2"));
        if lifted && configured {
            let fenced_condition = copy.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Fenced"));
            assert_eq!(fenced_condition.map(|c| (c.status.as_str(), c.reason.as_str())), Some(("False", "Lifted")));
            break;
        }
        assert!(
            healed.elapsed() < TIMEOUT,
            "west's copy not running again: {:?} {:#?}",
            copy.annotations(),
            copy.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("short partition: patient running again on west {:?} after the link came back", healed.elapsed());
    let c = wait_cluster(&clusters, "patient", "ready on west", |c| {
        ready_with(c, "2/2") && cond(c, "MemberAvailable").is_some_and(|k| k.status == "True")
    })
    .await;
    assert_eq!(member_of(&c).as_deref(), Some("west"), "the hub did not move it");
    assert_eq!(c.status.as_ref().and_then(|s| s.placement.as_ref()).map(|p| p.epoch), Some(1));
    assert_eq!(claim_uids(claims.list(&ListParams::default()).await.expect("pvcs").items), data, "same PVCs");
    assert_eq!(pods.list(&lp).await.expect("pods").items.len(), 2);
    assert!(fleet.spokes.get_mut("west").expect("west").running());
}

#[tokio::test]
async fn a_partitioned_member_with_a_skewed_clock_still_stops_its_copy_first() {
    // West's wall clock runs 30 s behind the hub's: a hub that trusted the member's
    // renewTime would see west's heartbeat 30 s old and move its clusters at once.
    a_partitioned_failover_cluster(Some(-30)).await;
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An app whose setup package (a real tgz on this machine, fetched by `file://`) takes a
/// moment to configure, so the spokes' setup-script metrics see real runs.
fn scripted_app(dir: &std::path::Path) -> Value {
    let src = dir.join("scripted-setup/scripted");
    std::fs::create_dir_all(&src).expect("package folder");
    std::fs::write(src.join("startscript"), "#!/bin/sh\nsleep 0.2\necho \"$*\" >> /var/log/scripted.log\n")
        .expect("startscript");
    let tgz = dir.join("scripted-setup.tgz");
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(dir.join("scripted-setup"))
        .arg("scripted")
        .status()
        .expect("tar");
    assert!(status.success(), "tar failed");
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": "scripted", "namespace": "default"},
        "spec": {
            "label": {"name": "Scripted"}, "distroID": "test/scripted", "version": "1", "configSchemaVersion": 8,
            "defaultImageRepoTag": "example/scripted:1",
            "defaultConfigPackage": {"packageURL": format!("file://{}", tgz.display())},
            "roles": [{"id": "node", "cardinality": "1+"}],
            "config": {"selectedRoles": ["node"], "roleServices": []}
        }
    })
}

/// Every dashboard panel query, with template variables filled in.
fn dashboard_queries(member: &str) -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut out = Vec::new();
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("dashboards").filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        for panel in d["panels"].as_array().expect("panels") {
            for t in panel["targets"].as_array().expect("targets") {
                let expr =
                    t["expr"].as_str().expect("expr").replace("$__rate_interval", "1m").replace("$member", member);
                out.push((
                    format!(
                        "{} / {}",
                        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
                        panel["title"]
                    ),
                    expr,
                ));
            }
        }
    }
    out
}

#[tokio::test]
async fn prometheus_sees_every_dashboard_query_and_fires_member_unavailable() {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    clusters
        .create(
            &PostParams::default(),
            &serde_json::from_value(cluster("watched", 1, "1", Some(("region", "east")))).expect("c"),
        )
        .await
        .expect("create");
    clusters
        .create(&PostParams::default(), &serde_json::from_value(cluster("toobig", 1, "100", None)).expect("c"))
        .await
        .expect("create");
    wait_cluster(&clusters, "watched", "ready", |c| ready_with(c, "2/2")).await;
    // A cluster whose members run a setup package, and one the hub's webhook refuses.
    let apps: Api<KubeDirectorApp> = Api::namespaced(hub.clone(), "default");
    apps.create(&PostParams::default(), &serde_json::from_value(scripted_app(&fleet.dir)).expect("app"))
        .await
        .expect("create app");
    let scripted = json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": "scripted", "namespace": "default"},
        "spec": {"app": "scripted", "roles": [{"id": "node", "members": 2}],
                 "placement": {"memberSelector": {"matchLabels": {"region": "east"}}}}});
    clusters.create(&PostParams::default(), &serde_json::from_value(scripted).expect("c")).await.expect("create");
    let mut unknown = cluster("unknown-app", 1, "1", None);
    unknown["spec"]["app"] = json!("no-such-app");
    let refused = clusters.create(&PostParams::default(), &serde_json::from_value(unknown).expect("c")).await;
    assert!(matches!(refused, Err(kube::Error::Api(ref e)) if e.message.contains("denied the request")), "{refused:?}");
    wait_cluster(&clusters, "scripted", "ready", |c| ready_with(c, "2/2")).await;

    // A real Prometheus scraping the hub and both spokes, with the shipped alert rules
    // (their `for` shortened so the test does not wait minutes).
    let rules =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/alerts.yaml"))
            .expect("rules");
    let rules: String = rules
        .lines()
        .map(|l| if l.trim_start().starts_with("for:") { "    for: 2s".to_string() } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    let prom_dir = fleet.dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("dir");
    std::fs::write(prom_dir.join("alerts.yaml"), rules).expect("rules");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n- {}\nscrape_configs:\n- job_name: kdfed-hub\n  static_configs:\n  - targets: ['127.0.0.1:{}']\n- job_name: kdfed-spoke\n  static_configs:\n  - targets: ['127.0.0.1:{}', '127.0.0.1:{}']\n",
        prom_dir.join("alerts.yaml").display(),
        fleet.hub_admin,
        fleet.spoke_admin["east"],
        fleet.spoke_admin["west"],
    );
    std::fs::write(prom_dir.join("prometheus.yml"), config).expect("config");
    let port = free_port();
    let args: Vec<String> = vec![
        format!("--config.file={}", prom_dir.join("prometheus.yml").display()),
        format!("--storage.tsdb.path={}", prom_dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    let mut prometheus = Daemon::start("prometheus", std::path::Path::new("/usr/bin/prometheus"), &args, &prom_dir)
        .expect("start prometheus (apt-get install prometheus)");

    // Every query of every dashboard panel returns data.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut missing = dashboard_queries("east");
    while !missing.is_empty() {
        let mut still = Vec::new();
        for (panel, expr) in missing {
            let body = http_get(port, &format!("/api/v1/query?query={}", percent_encode(&expr))).await;
            let data: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let found = data["data"]["result"].as_array().is_some_and(|r| !r.is_empty());
            if !found {
                still.push((panel, expr));
            }
        }
        missing = still;
        if !missing.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "queries without data (see {}): {missing:#?}",
                prom_dir.display()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    // The scenario's numbers are real: the refused cluster, two members' `--configure` runs
    // and both spokes' requests to their own API server and to the hub's.
    for (expr, at_least) in [
        ("sum(kdfed_hub_webhook_rejections_total{kind=\"KubeDirectorCluster\",operation=\"CREATE\"})", 1.0),
        ("sum(kdfed_spoke_setup_runs_total{step=\"configure\"})", 2.0),
        ("sum(kdfed_spoke_setup_duration_seconds_count{step=\"configure\"})", 2.0),
        ("count(count by (instance) (kdfed_spoke_api_requests_total{server=\"hub\"}))", 2.0),
        ("count(count by (instance) (kdfed_spoke_api_requests_total{server=\"local\"}))", 2.0),
        ("sum(kdfed_spoke_reconcile_total{controller=\"works\"})", 1.0),
    ] {
        let body = http_get(port, &format!("/api/v1/query?query={}", percent_encode(expr))).await;
        let data: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let value = data["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
        assert!(value.is_some_and(|v| v >= at_least), "{expr}: {body}");
    }

    // The member-unavailable alert fires when a spoke dies.
    fleet.spokes.get_mut("east").expect("east").kill();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let body = http_get(port, "/api/v1/alerts").await;
        let data: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let firing = data["data"]["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "KdfedMemberUnavailable"
                    && a["labels"]["member"] == "east"
                    && a["state"] == "firing"
            })
        });
        if firing {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "KdfedMemberUnavailable did not fire: {body}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    prometheus.kill();

    // The hub also told the people who look at the member: an Event when it joined and a
    // Warning when its heartbeat stopped.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(hub.clone(), "default");
    let lp = ListParams::default().fields("involvedObject.name=east,involvedObject.kind=KubeDirectorMember");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let seen: Vec<(String, String)> = events
            .list(&lp)
            .await
            .expect("events")
            .items
            .into_iter()
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
            .collect();
        if seen.contains(&("Normal".into(), "MemberAvailable".into()))
            && seen.contains(&("Warning".into(), "MemberUnavailable".into()))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "member Events missing: {seen:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A failover cluster on east (`mobile`, afterSeconds 10, may move to west) and one that
/// may only run on east (`pinned`, afterSeconds 10), both with data. East's spoke serves its
/// member's admission webhook (`failurePolicy: Fail`), and it is that SPOKE which is killed
/// (kill -9): the webhook is dead with it, while its fence watchdog lives on. The watchdog
/// stops both copies on its own clock (afterSeconds 10 - margin 5 s after the last renewal
/// the spoke recorded) — it scales the StatefulSets first (they are not behind the webhook)
/// and its annotation skips the dead webhook (its matchConditions) under the
/// ValidatingAdmissionPolicy kdfed-fence-watchdog — and the hub creates mobile's Work on
/// west only after east's pods are gone (grace 5 s + 10 s + skew margin 10 s). Then the spoke
/// comes back: mobile's Work is gone, so its old copy stays fenced for good with its PVCs,
/// never scaled up again even briefly; pinned's placement never moved (no other member
/// fits), so the spoke lifts the watchdog's fence once the hub confirms it, and the director
/// scales it back up on the same PVCs. Regression test of issue #15 (docs/reliability.md).
#[tokio::test]
async fn a_dead_spoke_s_fence_watchdog_stops_its_failover_copy_before_the_hub_places_the_new_one() {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    for (name, placement) in [
        ("mobile", json!({"preferences": [{"weight": 50, "preference": {"matchLabels": {"region": "east"}}}]})),
        ("pinned", json!({"memberSelector": {"matchLabels": {"region": "east"}}})),
    ] {
        let mut manifest = cluster(name, 1, "1", None);
        manifest["spec"]["roles"][0]["storage"] = json!({"size": "1Gi"});
        manifest["spec"]["placement"] = placement;
        manifest["spec"]["placement"]["failover"] = json!({"policy": "Reschedule", "afterSeconds": 10});
        clusters.create(&PostParams::default(), &serde_json::from_value(manifest).expect("c")).await.expect("create");
    }
    for name in ["mobile", "pinned"] {
        let c = wait_cluster(&clusters, name, "ready on east", |c| ready_with(c, "2/2")).await;
        assert_eq!(member_of(&c).as_deref(), Some("east"), "{name}");
    }
    let east = fleet.bed.client("east").await.expect("east");
    // East's spoke serves the member's webhook for clusters: with the spoke dead, any
    // reviewed write of a cluster on east fails.
    let hooks: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> = Api::all(east.clone());
    let registered = hooks.get("kdfed-spoke.kubedirector.hpe.com").await.expect("east's spoke registers its webhook");
    assert!(registered.webhooks.unwrap_or_default().iter().any(|h| h.failure_policy.as_deref() == Some("Fail")));
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(east.clone(), "default");
    let data = claim_uids(claims.list(&ListParams::default()).await.expect("pvcs").items);
    assert_eq!(data.len(), 2, "one data PVC per cluster on east: {data:?}");
    // The spoke records its renewals on the member for the watchdog.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(east.clone(), "kdfed-system");
    let record = leases.get("kdfed-spoke-heartbeat").await.expect("the spoke's heartbeat record");
    assert_eq!(record.spec.and_then(|s| s.holder_identity).as_deref(), Some("east"));

    let killed = tokio::time::Instant::now();
    fleet.spokes.get_mut("east").expect("east").kill();
    let (fenced_after, placed_after) = watch_the_race(&fleet, &clusters, killed, ("east", "west")).await;
    eprintln!(
        "dead spoke (with its webhook): east's copy down {fenced_after:?} after the kill, west's Work seen \
         {placed_after:?} after (gap {:?})",
        placed_after.saturating_sub(fenced_after)
    );
    assert!(fenced_after < placed_after, "east's copy was stopped only after the hub placed the new one");
    assert!(placed_after >= Duration::from_secs(20), "the hub failed over after only {placed_after:?}");
    assert!(fleet.watchdogs.get_mut("east").expect("watchdog").running(), "east's watchdog stayed up");
    assert_fenced_by_the_watchdog(&east, &["mobile", "pinned"]).await;
    assert_eq!(claim_uids(claims.list(&ListParams::default()).await.expect("pvcs").items), data, "data PVCs kept");
    let text = http_get(fleet.watchdog_admin["east"], "/metrics").await;
    let fences = sample(&text, "kdfed_fence_watchdog_fences_total");
    assert!(fences.is_some_and(|n| n >= 2.0), "east's watchdog counted {fences:?} fences");
    let failures = sample(&text, "kdfed_fence_watchdog_annotation_failures_total");
    assert_eq!(failures, Some(0.0), "east's watchdog could not annotate past the dead webhook");
    let c = clusters.get("pinned").await.expect("pinned");
    assert_eq!(member_of(&c).as_deref(), Some("east"), "pinned has nowhere else to go");

    // The spoke comes back.
    fleet.start_spoke("east");
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(east.clone(), "default");
    let mobile_sets = ListParams::default().labels("kubedirector.hpe.com/kdcluster=mobile");
    let mobile_replicas = || async {
        sets.list(&mobile_sets).await.expect("sets").items.iter().filter_map(|s| s.spec.as_ref()?.replicas).sum::<i32>()
    };
    let local: Api<KubeDirectorCluster> = Api::namespaced(east.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(east.clone(), "default");
    let mobile_pods = ListParams::default().labels("kubedirector.hpe.com/kdcluster=mobile");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        // Mobile's Work is gone: fenced for good, never running (nor scaled up) again on east.
        let mobile = local.get("mobile").await.expect("east's old copy is kept");
        assert_eq!(mobile_replicas().await, 0, "east's old copy was scaled up again");
        assert_eq!(pods.list(&mobile_pods).await.expect("pods").items.len(), 0, "east's old copy restarted");
        let for_good = mobile.annotations().get("federation.kubedirector.hpe.com/fenced").is_some_and(|v| v == "true");
        // Pinned's placement is confirmed: the fence is lifted and the director scales it up.
        let pinned = local.get("pinned").await.expect("pinned");
        let lifted = !pinned.annotations().contains_key("federation.kubedirector.hpe.com/self-fenced");
        let running = pinned
            .status
            .as_ref()
            .is_some_and(|s| s.state.as_deref() == Some("configured") && s.members_ready.as_deref() == Some("2/2"));
        if for_good && lifted && running {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after the spoke came back: mobile fenced for good {for_good}, pinned lifted {lifted} running {running}: \
             {:#?}",
            pinned.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A few more seconds with the spoke (and its director) running: mobile's StatefulSets
    // stay at zero.
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < watch_until {
        assert_eq!(mobile_replicas().await, 0, "east's old copy was scaled up after the spoke came back");
        assert_eq!(pods.list(&mobile_pods).await.expect("pods").items.len(), 0, "east's old copy restarted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_member(&hub, "east", "True").await;
    let pinned_sets = ListParams::default().labels("kubedirector.hpe.com/kdcluster=pinned");
    let replicas: i32 =
        sets.list(&pinned_sets).await.expect("sets").items.iter().filter_map(|s| s.spec.as_ref()?.replicas).sum();
    assert_eq!(replicas, 2, "the director restored pinned's replicas");
    assert_eq!(claim_uids(claims.list(&ListParams::default()).await.expect("pvcs").items), data, "same PVCs");
    wait_cluster(&clusters, "pinned", "ready on east again", |c| ready_with(c, "2/2")).await;
    let west = fleet.bed.client("west").await.expect("west");
    let west_pods: Api<Pod> = Api::namespaced(west, "default");
    assert_eq!(west_pods.list(&mobile_pods).await.expect("pods").items.len(), 2, "mobile keeps running on west");
}

/// A Work that reaches a member whose spoke comes back while the hub still holds the member
/// unavailable may be failed over at any moment, so the failover-enabled copy must not start
/// until the hub shows the member available again (found by the random-fault suite: a spoke
/// restarted just as the hub failed its cluster over created the copy from the Work and ran it
/// beside the new one). The hub processes are stopped meanwhile, so the member stays
/// unavailable on the hub however long the test looks.
#[tokio::test]
async fn a_spoke_back_from_the_dead_starts_a_failover_copy_only_once_the_hub_shows_it_available() {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    // West's spoke dies; a long grace keeps west available on the hub while late is placed
    // there (the hub places nothing on an unavailable member), then west's grace is the
    // fleet's again and it turns unavailable with late's Work waiting for it.
    let members: Api<KubeDirectorMember> = Api::all(hub.clone());
    let grace = |seconds: Option<i64>| json!({"spec": {"heartbeatGraceSeconds": seconds}});
    members.patch("west", &PatchParams::default(), &Patch::Merge(grace(Some(600)))).await.expect("long grace");
    fleet.spokes.get_mut("west").expect("west").kill();
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let mut manifest = cluster("late", 1, "1", Some(("region", "west")));
    manifest["spec"]["placement"]["failover"] = json!({"policy": "Reschedule", "afterSeconds": 600});
    clusters.create(&PostParams::default(), &serde_json::from_value(manifest).expect("c")).await.expect("create");
    let works: Api<KubeDirectorWork> = Api::namespaced(hub.clone(), "kdfed-member-west");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while works.get_opt("default.late").await.expect("work").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "late was not placed on west");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    members.patch("west", &PatchParams::default(), &Patch::Merge(grace(None))).await.expect("fleet's grace");
    wait_member(&hub, "west", "Unknown").await;
    for h in &mut fleet.hubs {
        h.kill();
    }

    fleet.start_spoke("west");
    let west = fleet.bed.client("west").await.expect("west");
    let local: Api<KubeDirectorCluster> = Api::namespaced(west.clone(), "default");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(hub.clone(), "kdfed-member-west");
    let renewed = || async {
        leases.get(kdfed_crds::federation::MEMBER_LEASE).await.ok().and_then(|l| l.spec?.renew_time).map(|t| t.0)
    };
    let first = renewed().await;
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(12);
    let mut renewals = 0;
    let mut last = first;
    while tokio::time::Instant::now() < watch_until {
        assert!(
            local.get_opt("late").await.expect("copy").is_none(),
            "west started late while the hub shows it unavailable"
        );
        let now = renewed().await;
        if now != last {
            renewals += 1;
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(renewals >= 3, "west's spoke renewed its heartbeat {renewals} times: it is not connected to the hub");
    let member = Api::<KubeDirectorMember>::all(hub.clone()).get("west").await.expect("west");
    let available = member.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Available"));
    assert_eq!(available.map(|c| c.status).as_deref(), Some("Unknown"), "no hub ran to mark west available");

    // The hub is back: it sees the renewals, shows west available, and the copy starts there.
    fleet.start_hub(0);
    let c = wait_cluster(&clusters, "late", "ready on west", |c| ready_with(c, "2/2")).await;
    assert_eq!(member_of(&c).as_deref(), Some("west"), "late stays on west");
    let epoch = c.status.and_then(|s| s.placement).map(|p| p.epoch);
    assert_eq!(epoch, Some(1), "late was placed once");
}

/// Samples the `dead` member's and the `alive` one's pods of `mobile` and the alive one's
/// Work until mobile runs there; fails at once if the Work exists (or the alive member runs a
/// pod) while the dead one still runs one. Returns when the dead member's copy was seen down
/// and when the Work was seen, after `killed`.
async fn watch_the_race(
    fleet: &Fleet,
    clusters: &Api<KubeDirectorCluster>,
    killed: tokio::time::Instant,
    (dead, alive): (&str, &str),
) -> (Duration, Duration) {
    let mobile_pods = ListParams::default().labels("kubedirector.hpe.com/kdcluster=mobile");
    let dead_pods: Api<Pod> = Api::namespaced(fleet.bed.client(dead).await.expect("dead member"), "default");
    let alive_pods: Api<Pod> = Api::namespaced(fleet.bed.client(alive).await.expect("alive member"), "default");
    let alive_works: Api<KubeDirectorWork> = Api::namespaced(fleet.hub.clone(), &format!("kdfed-member-{alive}"));
    let (mut fenced, mut placed) = (None, None);
    loop {
        let on_dead = dead_pods.list(&mobile_pods).await.expect("dead member's pods").items.len();
        let work = alive_works.get_opt("default.mobile").await.expect("work").is_some();
        let on_alive = alive_pods.list(&mobile_pods).await.expect("alive member's pods").items.len();
        let t = killed.elapsed();
        assert!(
            !(work && on_dead > 0),
            "the hub placed mobile on {alive} {t:?} after the kill while {dead} runs {on_dead}"
        );
        assert!(on_dead == 0 || on_alive == 0, "two live copies {t:?} after the kill");
        if on_dead == 0 && fenced.is_none() {
            fenced = Some(t);
        }
        assert!(on_dead == 0 || fenced.is_none(), "{dead}'s copy started again {t:?} after the kill");
        if work && placed.is_none() {
            placed = Some(t);
        }
        let c = clusters.get("mobile").await.expect("mobile");
        if member_of(&c).as_deref() == Some(alive) && ready_with(&c, "2/2") {
            break;
        }
        assert!(t < TIMEOUT, "mobile did not fail over to {alive}: {:#?}", c.status);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (fenced.expect("the dead member's copy went down"), placed.expect("the hub placed mobile on the other member"))
}

/// Each of `names` on `member` is annotated self-fenced by the watchdog, its StatefulSets are at
/// zero replicas, it has no pods, and the watchdog recorded an Event on it.
async fn assert_fenced_by_the_watchdog(member: &Client, names: &[&str]) {
    let local: Api<KubeDirectorCluster> = Api::namespaced(member.clone(), "default");
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(member.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(member.clone(), "default");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(member.clone(), "default");
    for name in names {
        let copy = local.get(name).await.expect("the copy is kept");
        let why = copy.annotations().get("federation.kubedirector.hpe.com/self-fenced").cloned().unwrap_or_default();
        assert!(why.starts_with("fence watchdog: "), "{name}: {:?}", copy.annotations());
        let lp = ListParams::default().labels(&format!("kubedirector.hpe.com/kdcluster={name}"));
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !pods.list(&lp).await.expect("pods").items.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "{name}: pods still on the member");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let listed = sets.list(&lp).await.expect("statefulsets").items;
        assert!(!listed.is_empty(), "{name}: no StatefulSets");
        for sts in listed {
            let spec = sts.spec.expect("spec");
            assert_eq!(spec.replicas, Some(0), "{name}: {} not scaled to zero", sts.metadata.name.unwrap_or_default());
            let policy = spec.persistent_volume_claim_retention_policy.expect("retention");
            assert_eq!(
                (policy.when_scaled.as_deref(), policy.when_deleted.as_deref()),
                (Some("Retain"), Some("Retain"))
            );
        }
        let listed = events.list(&ListParams::default()).await.expect("events").items;
        assert!(
            listed.iter().any(|e| e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some("SelfFenced")
                && e.message.as_deref().is_some_and(|m| m.contains("fence watchdog"))),
            "{name}: no SelfFenced Event from the watchdog"
        );
    }
}
