//! Pure builders of the objects the director creates for a cluster, as typed k8s-openapi
//! objects: the headless Service, each member's Service and each role's StatefulSet. The
//! controller and `kdfed render` use the same functions; none of them reads the API. A
//! StatefulSet is assembled from one small function per concern (pod metadata, the app
//! container, volumes and mounts, the init container, claim templates), each tested alone.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction, HostPathVolumeSource, Lifecycle,
    LifecycleHandler, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, ResourceRequirements, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    Volume, VolumeDevice, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kdfed_crds::app::{Cardinality, KubeDirectorAppSpec, NodeRole};
use kdfed_crds::cluster::{
    BlockStorage, ClusterStorage, KdSecret, KubeDirectorCluster, KubeDirectorClusterSpec, Role, VolumeProjection,
};
use kdfed_crds::config::KubeDirectorConfigSpec;
use kube::ResourceExt;

use super::names;

/// Persistent directories when a role has no setup package.
pub const DEFAULT_PERSIST_DIRS: &[&str] = &["/etc"];
/// Persistent directories of roles with a setup package in the new layout.
pub const NEW_LAYOUT_PERSIST_DIRS: &[&str] = &[
    "/etc",
    "/opt/guestconfig",
    "/opt/guestconfig.backup",
    "/var/log/guestconfig",
    "/usr/local/bin",
    "/usr/local/lib",
];
/// Persistent directories of roles with a setup package in the legacy layout.
pub const LEGACY_PERSIST_DIRS: &[&str] = &["/etc", "/opt", "/usr"];
/// Marker file the init container leaves once the volume is seeded.
pub const INIT_MARKER: &str = "/etc/kubedirector.init";

/// Size limit of each in-memory scratch directory.
const TMPFS_SIZE_LIMIT: &str = "20Gi";
/// In-memory scratch directories of every member: volume name and mount path.
const TMPFS_DIRS: [(&str, &str); 3] = [("tmpfs-tmp", "/tmp"), ("tmpfs-run", "/run"), ("tmpfs-run-lock", "/run/lock")];
/// Volume exposing the node's cgroup tree to apps that run systemd without native support.
const CGROUP_VOLUME: &str = "cgroupfs";
/// Where the node's cgroup tree is, on the node and in the container.
const CGROUP_PATH: &str = "/sys/fs/cgroup";
/// Device path prefix of block volumes when the role names none.
const BLOCK_PATH_PREFIX: &str = "/dev/kdblock";
/// Size of each block volume when the role names none.
const BLOCK_DEFAULT_SIZE: &str = "1Gi";
/// The headless Service's single port (a Service needs at least one).
const HEADLESS_PORT: i32 = 8888;
/// Access mode of every claim template: a member's volume is its own.
const READ_WRITE_ONCE: &str = "ReadWriteOnce";
/// Protocol of every port the builders declare.
const TCP: &str = "TCP";

/// Everything the builders need about one cluster, after defaulting.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// The cluster (metadata: name, namespace, uid).
    pub cluster: &'a KubeDirectorCluster,
    /// Its spec with defaults applied.
    pub spec: &'a KubeDirectorClusterSpec,
    /// Name of its app.
    pub app_name: &'a str,
    /// The app spec with defaults applied.
    pub app: &'a KubeDirectorAppSpec,
    /// Global config, if any.
    pub config: Option<&'a KubeDirectorConfigSpec>,
    /// Where the app was found: `local` or `system`.
    pub app_catalog: &'a str,
    /// Name of the headless Service.
    pub headless: &'a str,
}

/// A service endpoint a role exposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExposedPort {
    /// Service id.
    pub id: String,
    /// Port.
    pub port: i32,
    /// URL scheme, if any.
    pub url_scheme: Option<String>,
}

impl ExposedPort {
    /// Port name on member Services: `<scheme>-<id>` or `generic-<id>`.
    pub fn service_port_name(&self) -> String {
        match self.url_scheme.as_deref().filter(|s| !s.is_empty()) {
            Some(scheme) => format!("{}-{}", scheme.to_lowercase(), self.id),
            None => format!("generic-{}", self.id),
        }
    }
}

/// The endpoints of a role (services listed for it in `config.roleServices` that have a port),
/// in the order of `spec.services`.
pub fn exposed_ports(app: &KubeDirectorAppSpec, role_id: &str) -> Vec<ExposedPort> {
    let ids: Vec<&str> = app
        .config
        .role_services
        .iter()
        .filter(|rs| rs.role_id == role_id)
        .flat_map(|rs| rs.service_ids.iter().map(String::as_str))
        .collect();
    ports_of(app, &ids)
}

/// The endpoints a role's containers declare: its active services' and every service a
/// conditional config may add to it, in the order of `spec.services`. A mutable choice then
/// changes the member Services but never the pod template, which would restart the role's
/// members. The same as [`exposed_ports`] for apps without conditional configs.
pub fn declared_ports(app: &KubeDirectorAppSpec, role_id: &str) -> Vec<ExposedPort> {
    let conditional = app.config.conditional.iter().flat_map(|c| &c.role_services);
    let ids: Vec<&str> = app
        .config
        .role_services
        .iter()
        .chain(conditional)
        .filter(|rs| rs.role_id == role_id)
        .flat_map(|rs| rs.service_ids.iter().map(String::as_str))
        .collect();
    ports_of(app, &ids)
}

/// The services among `ids` that have a port, in the order of `spec.services`.
fn ports_of(app: &KubeDirectorAppSpec, ids: &[&str]) -> Vec<ExposedPort> {
    app.services
        .iter()
        .filter(|s| ids.contains(&s.id.as_str()))
        .filter_map(|s| {
            let ep = s.endpoint.as_ref()?;
            Some(ExposedPort { id: s.id.clone(), port: ep.port?, url_scheme: ep.url_scheme.clone() })
        })
        .collect()
}

fn is_within(dir: &str, parent: &str) -> bool {
    dir == parent || dir.starts_with(&format!("{}/", parent.trim_end_matches('/')))
}

fn absolute(dir: &str) -> String {
    let trimmed = dir.trim_end_matches('/');
    if trimmed.starts_with('/') { trimmed.to_string() } else { format!("/{trimmed}") }
}

/// Whether the role has a setup package (after defaulting).
pub fn has_setup_package(role: &NodeRole) -> bool {
    role.config_package.as_ref().is_some_and(Option::is_some)
}

/// Directories seeded onto and mounted from a role's volume: upstream's defaults (by setup
/// layout) plus the role's own, without duplicates or directories another one covers.
pub fn persist_dirs(role: &NodeRole) -> Vec<String> {
    let defaults: &[&str] = match role.config_package.as_ref().and_then(Option::as_ref) {
        None => DEFAULT_PERSIST_DIRS,
        Some(p) if p.use_new_setup_layout == Some(true) => NEW_LAYOUT_PERSIST_DIRS,
        Some(_) => LEGACY_PERSIST_DIRS,
    };
    let app_dirs: Vec<String> = role.persist_dirs.iter().flatten().map(|d| absolute(d)).collect();
    let mut out: Vec<String> = Vec::new();
    for d in defaults {
        let covered_by_app = app_dirs.iter().any(|a| a != d && is_within(d, a));
        let covered_by_default = defaults.iter().any(|o| o != d && is_within(d, o));
        if !covered_by_app && !covered_by_default && !out.iter().any(|o| o == d) {
            out.push((*d).to_string());
        }
    }
    let kept_defaults = out.clone();
    for d in app_dirs {
        let covered = kept_defaults.iter().chain(out.iter()).any(|o| is_within(&d, o));
        if !covered {
            out.push(d);
        }
    }
    out
}

/// The controller owner reference every created object carries.
pub fn owner_reference(cluster: &KubeDirectorCluster) -> OwnerReference {
    OwnerReference {
        api_version: kdfed_crds::KUBEDIRECTOR_API_VERSION.to_string(),
        kind: "KubeDirectorCluster".to_string(),
        name: cluster.name_any(),
        uid: cluster.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `base` with the entries of `extra` added in order; later maps win on equal keys.
fn merged(base: BTreeMap<String, String>, extra: &[Option<&BTreeMap<String, String>>]) -> BTreeMap<String, String> {
    let mut out = base;
    for map in extra.iter().flatten() {
        out.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

impl Inputs<'_> {
    fn namespace(&self) -> String {
        self.cluster.namespace().unwrap_or_else(|| "default".to_string())
    }

    fn cluster_labels(&self) -> BTreeMap<String, String> {
        names::cluster_labels(&self.cluster.name_any(), self.app_name, self.app_catalog)
    }

    fn role_labels(&self, role: &str) -> BTreeMap<String, String> {
        let mut labels = self.cluster_labels();
        labels.insert(names::LABEL_ROLE.to_string(), role.to_string());
        labels
    }

    fn pretty_name(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(names::ANNOTATION_APP_PRETTY_NAME.to_string(), self.app.label.name.clone())])
    }

    /// Metadata of a top-level object: in the cluster's namespace and owned by the cluster.
    fn metadata(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    ) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(self.cluster)]),
            ..ObjectMeta::default()
        }
    }

    /// The selector of a role's StatefulSet (stable for the role's life).
    pub fn selector(&self, role: &str) -> BTreeMap<String, String> {
        let mut labels = self.role_labels(role);
        labels.insert(names::LABEL_HEADLESS.to_string(), self.cluster.name_any());
        labels
    }

    /// The cluster's headless Service: DNS names for every member.
    pub fn headless_service(&self) -> Result<Service, BuildError> {
        Ok(Service {
            metadata: self.metadata(self.headless, self.cluster_labels(), self.pretty_name()),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_string()),
                publish_not_ready_addresses: Some(true),
                selector: Some(BTreeMap::from([(names::LABEL_HEADLESS.to_string(), self.cluster.name_any())])),
                ports: Some(vec![ServicePort {
                    name: Some("port".to_string()),
                    port: HEADLESS_PORT,
                    protocol: Some(TCP.to_string()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        })
    }

    /// A member's Service, or `None` when its role exposes no ports.
    pub fn member_service(&self, role: &Role, pod: &str) -> Result<Option<Service>, BuildError> {
        let ports = exposed_ports(self.app, &role.id);
        if ports.is_empty() {
            return Ok(None);
        }
        let config = self.config;
        let labels = merged(
            self.role_labels(&role.id),
            &[config.and_then(|c| c.service_labels.as_ref()), role.service_labels.as_ref()],
        );
        let annotations = merged(
            self.pretty_name(),
            &[config.and_then(|c| c.service_annotations.as_ref()), role.service_annotations.as_ref()],
        );
        Ok(Some(Service {
            metadata: self.metadata(&names::member_service(pod), labels, annotations),
            spec: Some(ServiceSpec {
                type_: Some(member_service_type(self.spec.service_type.as_deref()).to_string()),
                publish_not_ready_addresses: Some(true),
                selector: Some(BTreeMap::from([(names::LABEL_POD_NAME.to_string(), pod.to_string())])),
                ports: Some(service_ports(&ports)),
                ..ServiceSpec::default()
            }),
            status: None,
        }))
    }

    /// A role's StatefulSet with `replicas` members.
    pub fn statefulset(&self, role: &Role, name: &str, replicas: i32) -> Result<StatefulSet, BuildError> {
        let app_role = self.app.role(&role.id).cloned().unwrap_or_default();
        let selector = self.selector(&role.id);
        Ok(StatefulSet {
            // The StatefulSet carries the same labels its pods are selected by.
            metadata: self.metadata(name, selector.clone(), self.pretty_name()),
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                pod_management_policy: Some("Parallel".to_string()),
                service_name: Some(self.headless.to_string()),
                selector: LabelSelector { match_labels: Some(selector), match_expressions: None },
                persistent_volume_claim_retention_policy: Some(retention_policy(self.spec)),
                template: self.pod_template(role, &app_role),
                volume_claim_templates: Some(self.claim_templates(role)),
                ..StatefulSetSpec::default()
            }),
            status: None,
        })
    }

    /// The pod template of a role: its labels and annotations, the app container, the init
    /// container that seeds persistent directories (with storage), volumes and affinity.
    fn pod_template(&self, role: &Role, app_role: &NodeRole) -> PodTemplateSpec {
        let dirs = persist_dirs(app_role);
        let image = self.image(app_role);
        let (volumes, mounts) = self.volumes(role, &dirs);
        let init_containers = role.storage.as_ref().map(|_| vec![init_container(&image, &role.resources, &dirs)]);
        PodTemplateSpec {
            metadata: Some(self.pod_metadata(role)),
            spec: Some(PodSpec {
                automount_service_account_token: Some(false),
                containers: vec![self.app_container(role, app_role, image, mounts)],
                init_containers,
                volumes: Some(volumes),
                affinity: role.affinity.clone(),
                ..PodSpec::default()
            }),
        }
    }

    /// Pod labels (the selector, then config's and the role's) and annotations (the app's
    /// pretty name, then config's and the role's); later maps win on equal keys.
    fn pod_metadata(&self, role: &Role) -> ObjectMeta {
        let config = self.config;
        let labels =
            merged(self.selector(&role.id), &[config.and_then(|c| c.pod_labels.as_ref()), role.pod_labels.as_ref()]);
        let annotations = merged(
            self.pretty_name(),
            &[config.and_then(|c| c.pod_annotations.as_ref()), role.pod_annotations.as_ref()],
        );
        ObjectMeta { labels: Some(labels), annotations: Some(annotations), ..ObjectMeta::default() }
    }

    /// The role's image, else the app's default.
    fn image(&self, app_role: &NodeRole) -> String {
        app_role.image_repo_tag.clone().or_else(|| self.app.default_image_repo_tag.clone()).unwrap_or_default()
    }

    /// The container that runs the app.
    fn app_container(&self, role: &Role, app_role: &NodeRole, image: String, mounts: Vec<VolumeMount>) -> Container {
        let container_spec = app_role.container_spec.as_ref();
        Container {
            name: names::APP_CONTAINER.to_string(),
            image: Some(image),
            env: Some(container_env(role, app_role)),
            ports: Some(container_ports(&declared_ports(self.app, &role.id))),
            resources: Some(role.resources.clone()),
            volume_mounts: Some(mounts),
            volume_devices: role.block_storage.as_ref().map(block_devices),
            lifecycle: Some(post_start_hook(self.headless)),
            security_context: capabilities_context(&self.app.capabilities),
            stdin: container_spec.map(|cs| cs.stdin.unwrap_or(false)),
            tty: container_spec.map(|cs| cs.tty.unwrap_or(false)),
            ..Container::default()
        }
    }

    /// The pod's volumes and the app container's mounts, in upstream's order: persistent
    /// directories (from the claim template, no pod volume), in-memory scratch directories,
    /// the secret, projected PVCs, then the cgroup tree when systemd needs it.
    fn volumes(&self, role: &Role, dirs: &[String]) -> (Vec<Volume>, Vec<VolumeMount>) {
        let mut mounts = if role.storage.is_some() { persist_mounts(dirs) } else { Vec::new() };
        let mut pairs = tmpfs_volumes();
        if let Some(secret) = role.secret.as_ref().or(self.spec.default_secret.as_ref()) {
            pairs.push(secret_volume(secret));
        }
        pairs.extend(projection_volumes(&role.volume_projections));
        let native_systemd = self.config.and_then(|c| c.native_systemd_support).unwrap_or(false);
        if self.app.systemd_required == Some(true) && !native_systemd {
            pairs.push(cgroup_volume());
        }
        let (volumes, more_mounts): (Vec<Volume>, Vec<VolumeMount>) = pairs.into_iter().unzip();
        mounts.extend(more_mounts);
        (volumes, mounts)
    }

    /// Claim templates: the persistent directories' (`p`) first, then the block devices'.
    fn claim_templates(&self, role: &Role) -> Vec<PersistentVolumeClaim> {
        let labels = self.role_labels(&role.id);
        let mut templates: Vec<PersistentVolumeClaim> =
            role.storage.iter().map(|s| persist_claim_template(s, labels.clone())).collect();
        if let Some(block) = &role.block_storage {
            templates.extend(block_claim_templates(block, &labels));
        }
        templates
    }
}

/// Member Services are NodePort unless the cluster asks for ClusterIP or LoadBalancer.
fn member_service_type(requested: Option<&str>) -> &'static str {
    match requested {
        Some("ClusterIP") => "ClusterIP",
        Some("LoadBalancer") => "LoadBalancer",
        _ => "NodePort",
    }
}

/// A member Service's ports: one per exposed endpoint, named `<scheme>-<id>`.
fn service_ports(ports: &[ExposedPort]) -> Vec<ServicePort> {
    ports
        .iter()
        .map(|p| ServicePort {
            name: Some(p.service_port_name()),
            port: p.port,
            target_port: Some(IntOrString::Int(p.port)),
            protocol: Some(TCP.to_string()),
            ..ServicePort::default()
        })
        .collect()
}

/// Claims are never deleted with the StatefulSet: the director deletes a cluster's claims
/// itself when the cluster is deleted (per its policy), so a StatefulSet deleted behind its
/// back loses no data. On scale-down the StatefulSet controller follows the cluster's
/// whenScaled: it also removes a claim it created for an ordinal the director had already
/// let go.
fn retention_policy(spec: &KubeDirectorClusterSpec) -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    let when_scaled = if spec.retain_pvcs_when_scaled() { "Retain" } else { "Delete" };
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some("Retain".to_string()),
        when_scaled: Some(when_scaled.to_string()),
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.to_string()), value_from: None }
}

/// Whether the role requests or limits a positive amount of an `nvidia.com/` resource.
fn requests_gpu(resources: &ResourceRequirements) -> bool {
    [resources.requests.as_ref(), resources.limits.as_ref()].into_iter().flatten().any(|m| {
        m.iter()
            .any(|(k, q)| k.starts_with("nvidia.com/") && kdfed_crds::quantity::parse(&q.0).is_some_and(|v| v > 0.0))
    })
}

/// The app container's environment: the role's, then `NVIDIA_VISIBLE_DEVICES=void` unless
/// the role asks for GPUs (so images with the NVIDIA runtime see none), then
/// `PYTHONUSERBASE` for setup packages in the new layout (their Python tools live there).
fn container_env(role: &Role, app_role: &NodeRole) -> Vec<EnvVar> {
    let mut env = role.env.clone();
    if !requests_gpu(&role.resources) {
        env.push(env_var("NVIDIA_VISIBLE_DEVICES", "void"));
    }
    let new_layout =
        app_role.config_package.as_ref().and_then(Option::as_ref).is_some_and(|p| p.use_new_setup_layout == Some(true));
    if new_layout {
        env.push(env_var("PYTHONUSERBASE", "/usr/local"));
    }
    env
}

/// Container ports named after the service ids.
fn container_ports(ports: &[ExposedPort]) -> Vec<ContainerPort> {
    ports
        .iter()
        .map(|p| ContainerPort {
            name: Some(p.id.clone()),
            container_port: p.port,
            protocol: Some(TCP.to_string()),
            ..ContainerPort::default()
        })
        .collect()
}

/// The app's Linux capabilities, or no security context when it asks for none.
fn capabilities_context(capabilities: &[String]) -> Option<SecurityContext> {
    (!capabilities.is_empty()).then(|| SecurityContext {
        capabilities: Some(Capabilities { add: Some(capabilities.to_vec()), drop: None }),
        ..SecurityContext::default()
    })
}

/// The post-start hook running [`post_start_script`].
fn post_start_hook(headless: &str) -> Lifecycle {
    let command = vec!["/bin/bash".to_string(), "-c".to_string(), post_start_script(headless)];
    Lifecycle {
        post_start: Some(LifecycleHandler {
            exec: Some(ExecAction { command: Some(command) }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    }
}

fn mount(name: &str, path: &str, read_only: Option<bool>) -> VolumeMount {
    VolumeMount { name: name.to_string(), mount_path: path.to_string(), read_only, ..VolumeMount::default() }
}

/// Each persistent directory mounted from its own sub-path of the role's claim.
fn persist_mounts(dirs: &[String]) -> Vec<VolumeMount> {
    dirs.iter()
        .map(|d| VolumeMount {
            sub_path: Some(d.trim_start_matches('/').to_string()),
            ..mount(names::PVC_TEMPLATE, d, None)
        })
        .collect()
}

/// In-memory `/tmp`, `/run` and `/run/lock`.
fn tmpfs_volumes() -> Vec<(Volume, VolumeMount)> {
    TMPFS_DIRS
        .iter()
        .map(|(name, path)| {
            let volume = Volume {
                name: (*name).to_string(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".to_string()),
                    size_limit: Some(Quantity(TMPFS_SIZE_LIMIT.to_string())),
                }),
                ..Volume::default()
            };
            (volume, mount(name, path, None))
        })
        .collect()
}

/// The role's (or the cluster's default) Secret; writable unless it says read-only.
fn secret_volume(secret: &KdSecret) -> (Volume, VolumeMount) {
    let name = format!("secret-vol-{}", secret.name);
    let volume = Volume {
        name: name.clone(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.name.clone()),
            default_mode: secret.default_mode,
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    (volume, mount(&name, &secret.mount_path, Some(secret.read_only.unwrap_or(false))))
}

/// Existing PVCs mounted into every member, as `projected-vol-<index>`.
fn projection_volumes(projections: &[VolumeProjection]) -> Vec<(Volume, VolumeMount)> {
    projections
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = format!("projected-vol-{i}");
            let read_only = p.read_only.unwrap_or(false);
            let volume = Volume {
                name: name.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: p.pvc_name.clone(),
                    read_only: Some(read_only),
                }),
                ..Volume::default()
            };
            (volume, mount(&name, &p.mount_path, Some(read_only)))
        })
        .collect()
}

/// The node's cgroup tree, read-only, for systemd in the container.
fn cgroup_volume() -> (Volume, VolumeMount) {
    let volume = Volume {
        name: CGROUP_VOLUME.to_string(),
        host_path: Some(HostPathVolumeSource { path: CGROUP_PATH.to_string(), type_: None }),
        ..Volume::default()
    };
    (volume, mount(CGROUP_VOLUME, CGROUP_PATH, Some(true)))
}

/// The init container: as root, copies the persistent directories from the image onto the
/// role's claim (mounted at `/mnt`) the first time.
fn init_container(image: &str, resources: &ResourceRequirements, dirs: &[String]) -> Container {
    Container {
        name: names::INIT_CONTAINER.to_string(),
        image: Some(image.to_string()),
        command: Some(vec!["/bin/bash".to_string()]),
        args: Some(vec!["-c".to_string(), init_script(dirs)]),
        resources: Some(resources.clone()),
        security_context: Some(SecurityContext { run_as_user: Some(0), ..SecurityContext::default() }),
        volume_mounts: Some(vec![mount(names::PVC_TEMPLATE, "/mnt", None)]),
        ..Container::default()
    }
}

/// Number of block devices per member (one unless the role says otherwise).
fn block_device_count(block: &BlockStorage) -> i32 {
    block.num_devices.unwrap_or(1).max(0)
}

/// The block devices of the app container: `b<i>` at `<prefix><i>`.
fn block_devices(block: &BlockStorage) -> Vec<VolumeDevice> {
    let prefix = block.path_prefix.as_deref().unwrap_or(BLOCK_PATH_PREFIX);
    (0..block_device_count(block))
        .map(|i| VolumeDevice { name: format!("b{i}"), device_path: format!("{prefix}{i}") })
        .collect()
}

/// A claim template of one volume per member.
fn claim_template(
    name: String,
    labels: BTreeMap<String, String>,
    size: String,
    storage_class_name: Option<String>,
    volume_mode: Option<String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some(name), labels: Some(labels), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![READ_WRITE_ONCE.to_string()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), Quantity(size))])),
                limits: None,
            }),
            storage_class_name,
            volume_mode,
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// The claim template (`p`) holding a role's persistent directories.
fn persist_claim_template(storage: &ClusterStorage, labels: BTreeMap<String, String>) -> PersistentVolumeClaim {
    claim_template(
        names::PVC_TEMPLATE.to_string(),
        labels,
        storage.size.clone(),
        storage.storage_class_name.clone(),
        None,
    )
}

/// One raw block claim template per device (`b<i>`).
fn block_claim_templates(block: &BlockStorage, labels: &BTreeMap<String, String>) -> Vec<PersistentVolumeClaim> {
    let size = block.size.clone().unwrap_or_else(|| BLOCK_DEFAULT_SIZE.to_string());
    (0..block_device_count(block))
        .map(|i| {
            claim_template(
                format!("b{i}"),
                labels.clone(),
                size.clone(),
                block.storage_class_name.clone(),
                Some("Block".to_string()),
            )
        })
        .collect()
}

/// Never returned: every builder is total since they build typed objects. Kept so the
/// builders' signatures (and their callers' error variants) stay as they are.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {}

/// Seeds the persistent directories onto the role's volume once (guarded by a marker file).
pub fn init_script(dirs: &[String]) -> String {
    let list = dirs.join(" ");
    format!(
        "set -e\nif [ ! -f /mnt{INIT_MARKER} ]; then\n  mkdir -p /mnt/etc\n  if command -v rsync >/dev/null 2>&1; then\n    rsync -ax --relative {list} /mnt\n  else\n    cp --parents -ax {list} /mnt\n  fi\n  touch /mnt{INIT_MARKER}\nfi\n"
    )
}

/// Puts the headless Service's domain first in the container's DNS search path, so members
/// resolve each other by short hostname.
pub fn post_start_script(headless: &str) -> String {
    format!(
        "exec 2>>/tmp/kd-postcluster.log\nfor i in $(seq 60); do [ -s /etc/resolv.conf ] && break; sleep 1; done\nfirst=$(sed -n 's/^search \\([^ ]*\\).*/\\1/p' /etc/resolv.conf | head -n 1)\nif [ -n \"$first\" ]; then\n  sed \"0,/^search /s//search {headless}.$first /\" /etc/resolv.conf > /tmp/resolv.conf.new && cat /tmp/resolv.conf.new > /etc/resolv.conf\n  rm -f /tmp/resolv.conf.new\nfi\nchmod 755 /run\nexit 0\n"
    )
}

/// Member count a role asks for (after defaulting), 0 for roles absent from the spec.
pub fn desired_members(spec: &KubeDirectorClusterSpec, app: &KubeDirectorAppSpec, role_id: &str) -> i32 {
    spec.roles
        .iter()
        .find(|r| r.id == role_id)
        .and_then(|r| {
            r.members.or_else(|| app.role(role_id).and_then(|a| Cardinality::parse(&a.cardinality)).map(|c| c.min))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EnvVarSource;
    use kdfed_crds::app::{ContainerSpec, SetupPackageUrl};
    use serde_json::json;

    fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), Quantity((*v).to_string()))).collect()
    }

    fn app() -> KubeDirectorAppSpec {
        serde_json::from_value(json!({
            "label": {"name": "Web"}, "distroID": "kdfed/web", "version": "1", "configSchemaVersion": 8,
            "defaultImageRepoTag": "img:default", "systemdRequired": true,
            "services": [
                {"id": "ssh", "endpoint": {"port": 22}},
                {"id": "ui", "endpoint": {"urlScheme": "HTTPS", "port": 8443}},
                {"id": "agent"}
            ],
            "roles": [
                {"id": "web", "cardinality": "2", "imageRepoTag": "img:web"},
                {"id": "quiet", "cardinality": "0+"}
            ],
            "config": {"selectedRoles": ["web", "quiet"], "roleServices": [
                {"roleID": "web", "serviceIDs": ["ui", "agent", "ssh"]},
                {"roleID": "quiet", "serviceIDs": ["agent"]}
            ]}
        }))
        .expect("app")
    }

    fn cluster() -> KubeDirectorCluster {
        serde_json::from_value(json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": "shop", "namespace": "team", "uid": "uid-7"},
            "spec": {"app": "web", "roles": [
                {"id": "web", "podLabels": {"tier": "role"}, "serviceAnnotations": {"example.com/a": "role"},
                 "storage": {"size": "3Gi"}},
                {"id": "quiet", "members": 1}
            ]}
        }))
        .expect("cluster")
    }

    fn config() -> KubeDirectorConfigSpec {
        KubeDirectorConfigSpec {
            pod_labels: Some(
                [("tier".to_string(), "config".to_string()), ("cost".to_string(), "7".to_string())].into(),
            ),
            service_annotations: Some([("example.com/a".to_string(), "config".to_string())].into()),
            ..KubeDirectorConfigSpec::default()
        }
    }

    fn with_inputs<T>(config: Option<&KubeDirectorConfigSpec>, check: impl FnOnce(&Inputs<'_>) -> T) -> T {
        let (app, cluster) = (app(), cluster());
        let inputs = Inputs {
            cluster: &cluster,
            spec: &cluster.spec,
            app_name: "web",
            app: &app,
            config,
            app_catalog: "local",
            headless: "kdhs-abcde",
        };
        check(&inputs)
    }

    #[test]
    fn member_services_are_node_ports_unless_the_cluster_asks_otherwise() {
        assert_eq!(member_service_type(Some("ClusterIP")), "ClusterIP");
        assert_eq!(member_service_type(Some("LoadBalancer")), "LoadBalancer");
        assert_eq!(member_service_type(Some("ExternalName")), "NodePort");
        assert_eq!(member_service_type(None), "NodePort");
    }

    #[test]
    fn member_service_ports_are_named_by_scheme_and_target_the_same_port() {
        let ports = exposed_ports(&app(), "web");
        assert_eq!(ports.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["ssh", "ui"], "spec order, with a port");
        let built = service_ports(&ports);
        assert_eq!(built[0].name.as_deref(), Some("generic-ssh"));
        assert_eq!(built[1].name.as_deref(), Some("https-ui"));
        assert_eq!(built[1].target_port, Some(IntOrString::Int(8443)));
        assert_eq!(built[1].protocol.as_deref(), Some("TCP"));
    }

    #[test]
    fn claims_survive_the_statefulset_and_follow_when_scaled() {
        let mut spec = KubeDirectorClusterSpec::default();
        let policy = retention_policy(&spec);
        assert_eq!((policy.when_deleted.as_deref(), policy.when_scaled.as_deref()), (Some("Retain"), Some("Delete")));
        spec.persistent_volume_claim_retention_policy =
            Some(kdfed_crds::cluster::PvcRetentionPolicy { when_scaled: Some("Retain".into()), when_deleted: None });
        assert_eq!(retention_policy(&spec).when_scaled.as_deref(), Some("Retain"));
    }

    #[test]
    fn only_a_positive_nvidia_quantity_asks_for_gpus() {
        let mut resources = ResourceRequirements::default();
        assert!(!requests_gpu(&resources));
        resources.requests = Some(quantities(&[("nvidia.com/gpu", "0"), ("cpu", "4")]));
        assert!(!requests_gpu(&resources));
        resources.limits = Some(quantities(&[("nvidia.com/mig-1g.5gb", "1")]));
        assert!(requests_gpu(&resources));
    }

    #[test]
    fn the_environment_is_the_roles_then_gpu_and_setup_layout_variables() {
        let from_field = EnvVar { name: "POD".into(), value_from: Some(EnvVarSource::default()), ..EnvVar::default() };
        let mut role = Role { env: vec![env_var("A", "1"), from_field.clone()], ..Role::default() };
        let mut app_role = NodeRole::default();
        assert_eq!(
            container_env(&role, &app_role),
            vec![env_var("A", "1"), from_field, env_var("NVIDIA_VISIBLE_DEVICES", "void")]
        );
        role.env.clear();
        role.resources.limits = Some(quantities(&[("nvidia.com/gpu", "2")]));
        app_role.config_package =
            Some(Some(SetupPackageUrl { package_url: "file:///s.tgz".into(), use_new_setup_layout: Some(true) }));
        assert_eq!(container_env(&role, &app_role), vec![env_var("PYTHONUSERBASE", "/usr/local")]);
    }

    #[test]
    fn container_ports_carry_the_service_ids() {
        let ports = container_ports(&exposed_ports(&app(), "web"));
        let named: Vec<(Option<&str>, i32)> = ports.iter().map(|p| (p.name.as_deref(), p.container_port)).collect();
        assert_eq!(named, [(Some("ssh"), 22), (Some("ui"), 8443)]);
        assert!(container_ports(&[]).is_empty());
    }

    #[test]
    fn capabilities_become_a_security_context_only_when_asked_for() {
        assert_eq!(capabilities_context(&[]), None);
        let context = capabilities_context(&["NET_ADMIN".to_string()]).expect("context");
        assert_eq!(context.capabilities.and_then(|c| c.add), Some(vec!["NET_ADMIN".to_string()]));
        assert_eq!(context.run_as_user, None);
    }

    #[test]
    fn the_post_start_hook_runs_the_dns_search_script() {
        let hook = post_start_hook("kdhs-abcde");
        let command = hook.post_start.and_then(|h| h.exec).and_then(|e| e.command).expect("command");
        assert_eq!(command[..2], ["/bin/bash".to_string(), "-c".to_string()]);
        assert_eq!(command[2], post_start_script("kdhs-abcde"));
        assert!(command[2].contains("search kdhs-abcde.$first "));
    }

    #[test]
    fn persistent_directories_mount_sub_paths_of_the_claim() {
        let mounts = persist_mounts(&["/etc".to_string(), "/var/lib/app".to_string()]);
        let value = serde_json::to_value(&mounts).expect("json");
        assert_eq!(
            value,
            json!([
                {"name": "p", "mountPath": "/etc", "subPath": "etc"},
                {"name": "p", "mountPath": "/var/lib/app", "subPath": "var/lib/app"}
            ])
        );
    }

    #[test]
    fn scratch_directories_are_in_memory() {
        let value = serde_json::to_value(tmpfs_volumes()).expect("json");
        assert_eq!(
            value[0],
            json!([{"name": "tmpfs-tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "20Gi"}}, {"name": "tmpfs-tmp", "mountPath": "/tmp"}])
        );
        let paths: Vec<String> = tmpfs_volumes().into_iter().map(|(_, m)| m.mount_path).collect();
        assert_eq!(paths, ["/tmp", "/run", "/run/lock"]);
    }

    #[test]
    fn a_secret_is_writable_unless_it_says_read_only() {
        let secret = KdSecret {
            name: "creds".into(),
            mount_path: "/etc/creds".into(),
            default_mode: Some(0o400),
            read_only: None,
        };
        let (volume, mount) = secret_volume(&secret);
        assert_eq!(
            serde_json::to_value((&volume, &mount)).expect("json"),
            json!([
                {"name": "secret-vol-creds", "secret": {"secretName": "creds", "defaultMode": 256}},
                {"name": "secret-vol-creds", "mountPath": "/etc/creds", "readOnly": false}
            ])
        );
        let read_only = KdSecret { read_only: Some(true), default_mode: None, ..secret };
        let (volume, mount) = secret_volume(&read_only);
        assert_eq!(volume.secret.and_then(|s| s.default_mode), None);
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn projected_claims_are_numbered_and_say_whether_they_are_read_only() {
        let projections = [
            VolumeProjection { pvc_name: "shared".into(), mount_path: "/shared".into(), read_only: Some(true) },
            VolumeProjection { pvc_name: "scratch".into(), mount_path: "/scratch".into(), read_only: None },
        ];
        assert_eq!(
            serde_json::to_value(projection_volumes(&projections)).expect("json"),
            json!([
                [{"name": "projected-vol-0", "persistentVolumeClaim": {"claimName": "shared", "readOnly": true}},
                 {"name": "projected-vol-0", "mountPath": "/shared", "readOnly": true}],
                [{"name": "projected-vol-1", "persistentVolumeClaim": {"claimName": "scratch", "readOnly": false}},
                 {"name": "projected-vol-1", "mountPath": "/scratch", "readOnly": false}]
            ])
        );
    }

    #[test]
    fn the_cgroup_tree_is_mounted_read_only() {
        assert_eq!(
            serde_json::to_value(cgroup_volume()).expect("json"),
            json!([
                {"name": "cgroupfs", "hostPath": {"path": "/sys/fs/cgroup"}},
                {"name": "cgroupfs", "mountPath": "/sys/fs/cgroup", "readOnly": true}
            ])
        );
    }

    #[test]
    fn the_init_container_seeds_the_claim_as_root() {
        let resources = ResourceRequirements { limits: Some(quantities(&[("cpu", "1")])), ..Default::default() };
        let dirs = ["/etc".to_string(), "/opt".to_string()];
        let init = init_container("img:1", &resources, &dirs);
        assert_eq!(init.name, "init");
        assert_eq!(init.image.as_deref(), Some("img:1"));
        assert_eq!(init.command, Some(vec!["/bin/bash".to_string()]));
        assert_eq!(init.args, Some(vec!["-c".to_string(), init_script(&dirs)]));
        assert_eq!(init.resources, Some(resources));
        assert_eq!(init.security_context.and_then(|s| s.run_as_user), Some(0));
        assert_eq!(init.volume_mounts, Some(vec![mount("p", "/mnt", None)]));
        assert!(init_script(&dirs).contains("rsync -ax --relative /etc /opt /mnt"));
    }

    #[test]
    fn block_storage_defaults_to_one_device_of_one_gibibyte() {
        let labels = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let block = BlockStorage::default();
        assert_eq!(
            block_devices(&block),
            vec![VolumeDevice { name: "b0".into(), device_path: "/dev/kdblock0".into() }]
        );
        assert_eq!(
            serde_json::to_value(block_claim_templates(&block, &labels)).expect("json"),
            json!([{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "b0", "labels": {"k": "v"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Block", "resources": {"requests": {"storage": "1Gi"}}}}])
        );
        let block = BlockStorage {
            storage_class_name: Some("fast".into()),
            path_prefix: Some("/dev/x".into()),
            size: Some("5Gi".into()),
            num_devices: Some(2),
        };
        let paths: Vec<String> = block_devices(&block).into_iter().map(|d| d.device_path).collect();
        assert_eq!(paths, ["/dev/x0", "/dev/x1"]);
        let templates = block_claim_templates(&block, &labels);
        assert_eq!(templates.len(), 2);
        let spec = templates[1].spec.clone().expect("spec");
        assert_eq!((spec.storage_class_name.as_deref(), spec.volume_mode.as_deref()), (Some("fast"), Some("Block")));
        assert!(block_devices(&BlockStorage { num_devices: Some(-1), ..block }).is_empty());
    }

    #[test]
    fn the_persistent_claim_template_is_p_with_the_roles_size_and_class() {
        let storage = ClusterStorage { size: "10Gi".into(), storage_class_name: Some("standard".into()) };
        let template = persist_claim_template(&storage, BTreeMap::new());
        assert_eq!(
            serde_json::to_value(template).expect("json"),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "p", "labels": {}},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard", "resources": {"requests": {"storage": "10Gi"}}}})
        );
    }

    #[test]
    fn the_headless_service_selects_every_member_of_the_cluster() {
        let service = with_inputs(None, |i| i.headless_service()).expect("service");
        assert_eq!(
            serde_json::to_value(service).expect("json"),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {
                    "name": "kdhs-abcde", "namespace": "team",
                    "labels": {"kubedirector.hpe.com/kdcluster": "shop", "kubedirector.hpe.com/kdapp": "web", "kubedirector.hpe.com/appCatalog": "local"},
                    "annotations": {"kubedirector.hpe.com/kdapp-prettyName": "Web"},
                    "ownerReferences": [{"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
                        "name": "shop", "uid": "uid-7", "controller": true, "blockOwnerDeletion": true}]
                },
                "spec": {
                    "clusterIP": "None", "publishNotReadyAddresses": true,
                    "selector": {"kubedirector.hpe.com/headless": "shop"},
                    "ports": [{"name": "port", "port": 8888, "protocol": "TCP"}]
                }
            })
        );
    }

    #[test]
    fn a_member_service_selects_its_pod_and_the_role_wins_over_config() {
        let cluster = cluster();
        let config = config();
        let service = with_inputs(Some(&config), |i| i.member_service(&cluster.spec.roles[0], "kdss-x-1"))
            .expect("build")
            .expect("web exposes ports");
        assert_eq!(service.metadata.name.as_deref(), Some("s-kdss-x-1"));
        let annotations = service.metadata.annotations.expect("annotations");
        assert_eq!(annotations.get("example.com/a").map(String::as_str), Some("role"));
        let spec = service.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.selector, Some(BTreeMap::from([(names::LABEL_POD_NAME.to_string(), "kdss-x-1".to_string())])));
        let quiet = with_inputs(None, |i| i.member_service(&cluster.spec.roles[1], "kdss-y-0")).expect("build");
        assert!(quiet.is_none(), "a role without ports has no member Service");
    }

    #[test]
    fn a_statefulset_runs_its_role_with_storage_systemd_and_merged_pod_labels() {
        let cluster = cluster();
        let config = config();
        let sts = with_inputs(Some(&config), |i| i.statefulset(&cluster.spec.roles[0], "kdss-x", 2)).expect("build");
        let labels = sts.metadata.labels.clone().expect("labels");
        assert_eq!(labels.get(names::LABEL_ROLE).map(String::as_str), Some("web"));
        assert_eq!(labels.get(names::LABEL_HEADLESS).map(String::as_str), Some("shop"));
        let spec = sts.spec.expect("spec");
        assert_eq!((spec.replicas, spec.service_name.as_deref()), (Some(2), Some("kdhs-abcde")));
        assert_eq!(spec.selector.match_labels, Some(labels));
        let template = spec.template;
        let pod_labels = template.metadata.and_then(|m| m.labels).expect("pod labels");
        assert_eq!(pod_labels.get("tier").map(String::as_str), Some("role"), "the role's label wins over config's");
        assert_eq!(pod_labels.get("cost").map(String::as_str), Some("7"));
        let pod = template.spec.expect("pod spec");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("img:web"));
        assert_eq!((container.stdin, container.tty, container.volume_devices.as_ref()), (None, None, None));
        let mounts: Vec<&str> = container.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(mounts, ["/etc", "/tmp", "/run", "/run/lock", "/sys/fs/cgroup"], "persist dirs, tmpfs, cgroup");
        let init = pod.init_containers.expect("storage seeds its claim");
        assert_eq!(init[0].image.as_deref(), Some("img:web"));
        let templates = spec.volume_claim_templates.expect("templates");
        assert_eq!(templates.len(), 1);
        assert_eq!(templates[0].spec.as_ref().and_then(|s| s.storage_class_name.as_deref()), None);
    }

    #[test]
    fn a_role_without_storage_has_no_init_container_and_native_systemd_needs_no_cgroup_mount() {
        let cluster = cluster();
        let config = KubeDirectorConfigSpec { native_systemd_support: Some(true), ..KubeDirectorConfigSpec::default() };
        let sts = with_inputs(Some(&config), |i| i.statefulset(&cluster.spec.roles[1], "kdss-y", 1)).expect("build");
        let spec = sts.spec.expect("spec");
        assert_eq!(spec.volume_claim_templates, Some(Vec::new()), "an empty list, as upstream writes it");
        let pod = spec.template.spec.expect("pod spec");
        assert!(pod.init_containers.is_none());
        let volumes: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["tmpfs-tmp", "tmpfs-run", "tmpfs-run-lock"]);
        assert_eq!(pod.containers[0].image.as_deref(), Some("img:default"), "the app's default image");
        assert_eq!(pod.containers[0].ports, Some(Vec::new()));
    }

    #[test]
    fn a_container_spec_sets_stdin_and_tty_explicitly() {
        let mut app = app();
        app.roles[0].container_spec = Some(ContainerSpec { stdin: Some(true), tty: None });
        let cluster = cluster();
        let inputs = Inputs {
            cluster: &cluster,
            spec: &cluster.spec,
            app_name: "web",
            app: &app,
            config: None,
            app_catalog: "local",
            headless: "kdhs-abcde",
        };
        let container = inputs.app_container(&cluster.spec.roles[0], &app.roles[0], "img".into(), Vec::new());
        assert_eq!((container.stdin, container.tty), (Some(true), Some(false)));
    }

    #[test]
    fn members_default_to_the_minimum_cardinality() {
        let (app, cluster) = (app(), cluster());
        assert_eq!(desired_members(&cluster.spec, &app, "web"), 2);
        assert_eq!(desired_members(&cluster.spec, &app, "quiet"), 1);
        assert_eq!(desired_members(&cluster.spec, &app, "absent"), 0);
    }
}
