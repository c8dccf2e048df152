//! Deploy-time config choices on a real control plane whose KWOK pods really run a setup
//! package: a cluster choosing the notebook gets the notebook role and its service, one
//! keeping the default gets neither; members read the chosen values and the merged
//! configMeta in configmeta; changing the mutable `level` choice of a running cluster
//! re-renders the member Services and reaches the members as `startscript --reconfigure`
//! with a fresh configmeta, without restarting a pod.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::Testbed;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

mod support;
use support::Director;

const TIMEOUT: Duration = Duration::from_secs(180);

/// Records every invocation, and the configmeta seen at `--configure` and `--reconfigure`.
const STARTSCRIPT: &str = r#"#!/bin/sh
log=/var/log/guestconfig
mkdir -p "$log"
case "$1" in
  --configure) cp /etc/guestconfig/configmeta.json "$log/configmeta-at-configure.json" ;;
  --reconfigure) cp /etc/guestconfig/configmeta.json "$log/configmeta-at-reconfigure.json" ;;
esac
echo "$*" >> "$log/invocations"
"#;

fn build_package(dir: &Path) -> PathBuf {
    let src = dir.join("chooser-setup");
    std::fs::create_dir_all(src.join("chooser")).expect("package folder");
    std::fs::write(src.join("chooser/startscript"), STARTSCRIPT).expect("startscript");
    let tgz = dir.join("chooser-setup.tgz");
    let status = Command::new("tar").arg("czf").arg(&tgz).arg("-C").arg(&src).arg("chooser").status().expect("tar");
    assert!(status.success(), "tar failed");
    tgz
}

/// `notebook` (fixed, default false) adds the notebook role; `level` (mutable) sets the
/// `level` configMeta key and, at DEBUG, adds the `debug` service to the head.
fn chooser_app(package: &Path) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": "chooser"},
        "spec": {
            "label": {"name": "Chooser"}, "distroID": "test/chooser", "version": "1", "configSchemaVersion": 8,
            "defaultImageRepoTag": "example/chooser:1",
            "defaultConfigPackage": {"packageURL": format!("file://{}", package.display())},
            "services": [
                {"id": "ssh", "endpoint": {"port": 22}},
                {"id": "ui", "endpoint": {"port": 8080, "urlScheme": "http"}},
                {"id": "debug", "endpoint": {"port": 5005}},
                {"id": "lab", "endpoint": {"port": 8888, "urlScheme": "http"}}
            ],
            "roles": [{"id": "head", "cardinality": "1"}, {"id": "notebook", "cardinality": "1"}],
            "configChoices": [
                {"id": "notebook", "label": {"name": "Notebook"}, "values": ["false", "true"]},
                {"id": "level", "label": {"name": "Log level"}, "values": ["INFO", "DEBUG"], "mutable": true}
            ],
            "config": {
                "selectedRoles": ["head"],
                "roleServices": [{"roleID": "head", "serviceIDs": ["ssh", "ui"]}],
                "configMeta": {"level": "INFO"},
                "conditional": [
                    {"when": {"notebook": "true"}, "selectedRoles": ["notebook"],
                     "roleServices": [{"roleID": "notebook", "serviceIDs": ["lab"]}]},
                    {"when": {"level": "DEBUG"}, "roleServices": [{"roleID": "head", "serviceIDs": ["debug"]}],
                     "configMeta": {"level": "DEBUG"}}
                ]
            }
        }
    })
}

fn cluster(name: &str, choices: Value, roles: Value) -> KubeDirectorCluster {
    serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": name},
        "spec": {"app": "chooser", "serviceType": "ClusterIP", "configChoices": choices, "roles": roles}
    }))
    .expect("cluster")
}

struct Env {
    bed: Testbed,
    client: Client,
    _director: Director,
}

async fn env() -> Env {
    let bed = Testbed::start(&["east"]).await.expect("test bed");
    let client = bed.client("east").await.expect("client");
    kdfed_common::crds::install(client.clone()).await.expect("CRDs");
    let c = bed.cluster("east");
    let director = Director::start(&c.kubeconfig, &c.dir.join("director.log"), &[], 0);
    let app = chooser_app(&build_package(&bed.dir));
    let apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "default");
    apps.create(&PostParams::default(), &serde_json::from_value(app).expect("app")).await.expect("create app");
    Env { bed, client, _director: director }
}

impl Env {
    fn clusters(&self) -> Api<KubeDirectorCluster> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn member_file(&self, pod: &str, path: &str) -> Option<String> {
        let uid = Api::<Pod>::namespaced(self.client.clone(), "default").get(pod).await.ok()?.uid()?;
        std::fs::read_to_string(self.bed.cluster("east").pod_filesystem("default", pod, &uid).join(path)).ok()
    }

    async fn member_json(&self, pod: &str, path: &str) -> Value {
        let text = self.member_file(pod, path).await.unwrap_or_else(|| panic!("{pod}: no {path}"));
        serde_json::from_str(&text).expect("json")
    }

    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&KubeDirectorCluster) -> bool,
    ) -> KubeDirectorCluster {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(c) = self.clusters().get_opt(name).await.expect("get cluster")
                && done(&c)
            {
                return c;
            }
            if tokio::time::Instant::now() > deadline {
                let c = self.clusters().get_opt(name).await.expect("get");
                panic!("{name}: not {what} after {TIMEOUT:?}: {:#?}", c.map(|c| c.status));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Role label → StatefulSet replicas of the cluster's StatefulSets.
    async fn statefulsets(&self, name: &str) -> BTreeMap<String, i32> {
        let lp = ListParams::default().labels(&format!("kubedirector.hpe.com/kdcluster={name}"));
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), "default");
        api.list(&lp)
            .await
            .expect("statefulsets")
            .items
            .into_iter()
            .map(|s| {
                let role = s.labels().get("kubedirector.hpe.com/role").cloned().unwrap_or_default();
                (role, s.spec.and_then(|s| s.replicas).unwrap_or(0))
            })
            .collect()
    }

    /// The ports of a member's Service.
    async fn service_ports(&self, pod: &str) -> Vec<i32> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        let svc = api.get(&format!("s-{pod}")).await.expect("member service");
        svc.spec.and_then(|s| s.ports).unwrap_or_default().iter().map(|p| p.port).collect()
    }
}

fn configured(c: &KubeDirectorCluster) -> bool {
    c.status.as_ref().is_some_and(|s| {
        s.state.as_deref() == Some("configured")
            && s.roles.iter().flat_map(|r| &r.members).all(|m| m.state == "configured")
    })
}

fn pod_of(c: &KubeDirectorCluster, role: &str) -> String {
    let status = c.status.as_ref().expect("status");
    status.roles.iter().find(|r| r.id == role).and_then(|r| r.members.first()).expect("member").pod.clone()
}

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

#[tokio::test]
async fn choices_select_roles_and_services_and_a_mutable_one_reaches_reconfigure() {
    let env = env().await;
    // The default (no notebook) with the notebook role listed: no notebook StatefulSet.
    let plain = cluster("plain", json!({}), json!([{"id": "head"}, {"id": "notebook"}]));
    env.clusters().create(&PostParams::default(), &plain).await.expect("create plain");
    // A non-default choice: the notebook role runs, with its service.
    let nb = cluster("nb", json!({"notebook": "true"}), json!([{"id": "head"}, {"id": "notebook"}]));
    env.clusters().create(&PostParams::default(), &nb).await.expect("create nb");

    let c = env.wait_for("plain", "configured", configured).await;
    assert_eq!(
        c.status.as_ref().map(|s| s.config_choices.clone()),
        Some(values(&[("level", "INFO"), ("notebook", "false")]))
    );
    assert_eq!(env.statefulsets("plain").await, BTreeMap::from([("head".to_string(), 1)]), "only the selected role");

    let c = env.wait_for("nb", "configured", configured).await;
    let status = c.status.clone().expect("status");
    assert_eq!(status.config_choices, values(&[("level", "INFO"), ("notebook", "true")]));
    assert_eq!(env.statefulsets("nb").await, BTreeMap::from([("head".to_string(), 1), ("notebook".to_string(), 1)]));
    let (head, notebook) = (pod_of(&c, "head"), pod_of(&c, "notebook"));
    assert_eq!(env.service_ports(&head).await, [22, 8080]);
    assert_eq!(env.service_ports(&notebook).await, [8888]);
    for pod in [&head, &notebook] {
        let meta = env.member_json(pod, "var/log/guestconfig/configmeta-at-configure.json").await;
        assert_eq!(meta["cluster"]["config_choices"], json!({"level": "INFO", "notebook": "true"}), "{pod}");
        assert_eq!(meta["nodegroups"]["1"]["config_metadata"], json!({"level": "INFO"}), "{pod}");
        assert_eq!(meta["nodegroups"]["1"]["roles"]["notebook"]["services"]["lab"]["id"], "lab", "{pod}");
    }
    let pod_uid = |pod: String| {
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
        async move { pods.get(&pod).await.expect("pod").uid() }
    };
    let head_uid = pod_uid(head.clone()).await;

    // The mutable choice changes on the running cluster (a merge patch, as kubectl does).
    let patch = json!({"spec": {"configChoices": {"level": "DEBUG"}}});
    env.clusters().patch("nb", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("change level");
    let c = env
        .wait_for("nb", "reconfigured", |c| {
            configured(c)
                && c.status.as_ref().is_some_and(|s| {
                    s.config_choices.get("level").map(String::as_str) == Some("DEBUG")
                        && s.roles.iter().flat_map(|r| &r.members).all(|m| {
                            m.state_detail.last_config_choices.get("level").map(String::as_str) == Some("DEBUG")
                        })
                })
        })
        .await;
    assert_eq!(pod_of(&c, "head"), head);
    assert_eq!(pod_uid(head.clone()).await, head_uid, "the pod was not restarted");
    for pod in [&head, &notebook] {
        let calls = env.member_file(pod, "var/log/guestconfig/invocations").await.unwrap_or_default();
        assert_eq!(calls.lines().collect::<Vec<_>>(), ["--configure", "--reconfigure"], "{pod}");
        let meta = env.member_json(pod, "var/log/guestconfig/configmeta-at-reconfigure.json").await;
        assert_eq!(meta["cluster"]["config_choices"]["level"], "DEBUG", "{pod}: fresh configmeta first");
        assert_eq!(meta["nodegroups"]["1"]["config_metadata"], json!({"level": "DEBUG"}), "{pod}");
    }
    // The head's Service now exposes the debug port; the notebook's is unchanged.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while env.service_ports(&head).await != [22, 8080, 5005] {
        assert!(tokio::time::Instant::now() < deadline, "head Service: {:?}", env.service_ports(&head).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(env.service_ports(&notebook).await, [8888]);
}
