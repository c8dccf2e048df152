//! Validating admission for kdfed's kinds: an HTTPS server (rustls, certificates re-read
//! when their files change, so they rotate without a restart) and the review logic that
//! applies the same defaulting and validation as everything else, naming field and rule.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kdfed_crds::federation::KubeDirectorMember;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster, KubeDirectorConfig, defaults, validate};
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Client, ResourceExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::json;
use tracing::{info, warn};

/// Path of the validating webhook.
pub const PATH: &str = "/validate";
/// Path of the mutating webhook (secret key encryption, generated master keys).
pub const MUTATE_PATH: &str = "/mutate";

/// Why the webhook server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Certificate or key unusable.
    #[error("webhook certificate {path}: {message}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The address could not be bound.
    #[error("bind {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// TLS configuration failed.
    #[error("tls: {0}")]
    Tls(String),
}

#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Option<SystemTime>, Option<Arc<CertifiedKey>>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingCert {
    fn load(&self) -> Result<Arc<CertifiedKey>, ServeError> {
        let bad = |path: &Path, message: String| ServeError::Certificate { path: path.display().to_string(), message };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| bad(&self.cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&self.cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(bad(&self.cert, "no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| bad(&self.key, e.to_string()))?;
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| bad(&self.key, e.to_string()))?;
        let pair = CertifiedKey::new(certs, signing);
        // A rotation caught between writing the key and the certificate: not a pair yet.
        pair.keys_match().map_err(|e| bad(&self.cert, format!("certificate and key do not match: {e}")))?;
        Ok(Arc::new(pair))
    }

    fn stamp(&self) -> Option<SystemTime> {
        modified(&self.cert).max(modified(&self.key))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamp = self.stamp();
        if let Ok(guard) = self.current.read()
            && guard.0 == stamp
            && guard.1.is_some()
        {
            return guard.1.clone();
        }
        match self.load() {
            Ok(key) if self.stamp() == stamp => {
                if let Ok(mut guard) = self.current.write() {
                    if guard.1.is_some() {
                        info!("webhook certificate reloaded");
                    }
                    *guard = (stamp, Some(key.clone()));
                }
                Some(key)
            }
            // The files changed while being read: serve this pair, re-read next time.
            Ok(key) => Some(key),
            Err(e) => {
                // Keep serving the last good certificate while a rotation is half-written.
                warn!("{e}");
                self.current.read().ok().and_then(|g| g.1.clone())
            }
        }
    }
}

/// What the webhook checks against: the API server it guards.
#[derive(Clone)]
pub struct Reviewer {
    /// Client of that API server.
    pub client: Client,
    /// Namespace of the system catalog and `KubeDirectorConfig`.
    pub system_namespace: String,
    /// The user name of the one writer trusted to store secret-key ciphertexts it made:
    /// a federated spoke's own identity (from a `SelfSubjectReview`), since hub sync stores
    /// the member's copies already encrypted with the member's key. None for everyone else,
    /// whose hand-made ciphertexts are refused as upstream refuses them.
    pub own_user: Option<String>,
}

/// The user name `client` acts as, from a `SelfSubjectReview` (None when the API server
/// does not say).
pub async fn own_user(client: &Client) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&kube::api::PostParams::default(), &SelfSubjectReview::default())
        .await;
    match review {
        Ok(r) => r.status.and_then(|s| s.user_info).and_then(|u| u.username),
        Err(e) => {
            warn!("cannot learn this component's own user name (SelfSubjectReview): {e}");
            None
        }
    }
}

/// Starts the webhook on `addr` with the certificate files; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    reviewer: Reviewer,
    metrics: Arc<crate::observe::WebhookMetrics>,
) -> Result<SocketAddr, ServeError> {
    let resolver = ReloadingCert { cert, key, current: RwLock::new((None, None)) };
    resolver.load()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| ServeError::Bind(addr, e))?;
    let bound = listener.local_addr().map_err(|e| ServeError::Bind(addr, e))?;
    let reviewer = Arc::new(reviewer);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let reviewer = reviewer.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(move |req| handle(req, reviewer.clone(), metrics.clone()));
                if let Err(e) =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await
                {
                    warn!("webhook connection: {e}");
                }
            });
        }
    });
    info!(address = %bound, "admission webhook listening");
    Ok(bound)
}

async fn handle(
    req: Request<Incoming>,
    reviewer: Arc<Reviewer>,
    metrics: Arc<crate::observe::WebhookMetrics>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let started = std::time::Instant::now();
    let reply = |code: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        Ok(r)
    };
    let mutate = match req.uri().path() {
        "/healthz" => return reply(StatusCode::OK, b"{\"status\":\"ok\"}".to_vec()),
        PATH => false,
        MUTATE_PATH => true,
        _ => return reply(StatusCode::NOT_FOUND, b"{}".to_vec()),
    };
    let webhook = if mutate { "mutate" } else { "validate" };
    let unreadable = |e: String| {
        metrics.record(webhook, "malformed", "", false, started.elapsed().as_secs_f64());
        reply(StatusCode::BAD_REQUEST, format!("{{\"error\":{e:?}}}").into_bytes())
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return unreadable(e.to_string()),
    };
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return unreadable(e.to_string()),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return unreadable(e.to_string()),
    };
    let response =
        if mutate { mutate_request(&reviewer, &request).await } else { review_request(&reviewer, &request).await };
    let operation = match request.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    };
    metrics.record(webhook, &request.kind.kind, operation, response.allowed, started.elapsed().as_secs_f64());
    match serde_json::to_vec(&response.into_review()) {
        Ok(body) => reply(StatusCode::OK, body),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, format!("{{\"error\":{:?}}}", e.to_string()).into_bytes()),
    }
}

/// The object of a review as `T`; a type error names the field it is at (the mutating
/// webhook runs before the API server's schema validation, so it meets them first).
fn typed<T: serde::de::DeserializeOwned>(object: &Option<DynamicObject>) -> Result<Option<T>, String> {
    let Some(o) = object else { return Ok(None) };
    let value = serde_json::to_value(o).map_err(|e| format!("malformed object: {e}"))?;
    serde_path_to_error::deserialize(value).map(Some).map_err(|e| {
        let path = e.path().to_string();
        let error = e.into_inner();
        format!("{path}: malformed object: {error} (rule: type)")
    })
}

/// The decision for one admission request.
pub async fn review_request(reviewer: &Reviewer, req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    let verdict = match req.kind.kind.as_str() {
        "KubeDirectorApp" => review_app(reviewer, req).await,
        "KubeDirectorCluster" => review_cluster(reviewer, req).await,
        "KubeDirectorMember" => review_member(req),
        "KubeDirectorConfig" => review_config(req),
        _ => Ok(()),
    };
    match verdict {
        Ok(()) => response,
        Err(message) => {
            info!(kind = %req.kind.kind, name = %req.name, "rejected: {message}");
            response.deny(message)
        }
    }
}

async fn review_app(reviewer: &Reviewer, req: &AdmissionRequest<DynamicObject>) -> Result<(), String> {
    let old: Option<KubeDirectorApp> = typed(&req.old_object)?;
    let new: Option<KubeDirectorApp> = typed(&req.object)?;
    if let Some(app) = &new {
        let mut spec = app.spec.clone();
        defaults::app(&mut spec);
        validate::app(&spec).map_err(|e| e.to_string())?;
    }
    let changed = match (&old, &new, &req.operation) {
        (_, _, Operation::Delete) => true,
        (Some(o), Some(n), Operation::Update) => o.spec != n.spec,
        _ => false,
    };
    if changed {
        // Upstream's rule: an app in use cannot change or go.
        let name = req.name.clone();
        let clusters: Api<KubeDirectorCluster> = Api::all(reviewer.client.clone());
        let list = clusters.list(&Default::default()).await.map_err(|e| format!("cannot check app references: {e}"))?;
        let ns = req.namespace.clone().unwrap_or_default();
        let users: Vec<String> = list
            .items
            .iter()
            .filter(|c| c.spec.app == name)
            .filter(|c| c.namespace().as_deref() == Some(ns.as_str()) || ns == reviewer.system_namespace)
            .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
            .collect();
        if !users.is_empty() {
            return Err(format!(
                "KubeDirectorApp resource cannot be deleted or modified while referenced by the following KubeDirectorCluster resources: {} (rule: app-in-use)",
                users.join(", ")
            ));
        }
    }
    Ok(())
}

async fn review_cluster(reviewer: &Reviewer, req: &AdmissionRequest<DynamicObject>) -> Result<(), String> {
    if req.operation == Operation::Delete {
        return Ok(());
    }
    let old: Option<KubeDirectorCluster> = typed(&req.old_object)?;
    let Some(new) = typed::<KubeDirectorCluster>(&req.object)? else { return Ok(()) };
    if let Some(old) = &old
        && old.spec == new.spec
    {
        // Metadata-only updates (finalizers, labels) never depend on the catalog.
        return Ok(());
    }
    if new.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let ns = req.namespace.clone().unwrap_or_default();
    let found = crate::catalog::find_app(
        &reviewer.client,
        &ns,
        &reviewer.system_namespace,
        &new.spec.app,
        new.spec.app_catalog.as_deref(),
    )
    .await
    .map_err(|e| format!("cannot read the app catalog: {e}"))?;
    let Some((app, _)) = found else {
        return Err(format!(
            "spec.app: Invalid app({}). This app resource ID has not been registered. (rule: known-app)",
            new.spec.app
        ));
    };
    let config = Api::<KubeDirectorConfig>::namespaced(reviewer.client.clone(), &reviewer.system_namespace)
        .get_opt(kdfed_crds::config::CONFIG_NAME)
        .await
        .ok()
        .flatten()
        .map(|c| c.spec);
    let mut app_spec = app.spec.clone();
    defaults::app(&mut app_spec);
    let mut spec = new.spec.clone();
    defaults::cluster(&mut spec, &app_spec, config.as_ref());
    validate::cluster(&spec, &new.spec.app, &app_spec).map_err(|e| e.to_string())?;
    check_secrets(reviewer, &ns, &new.spec, config.as_ref()).await?;
    if let Some(old) = &old {
        validate::cluster_update(&old.spec, &new.spec, old.status.as_ref()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn master_key(reviewer: &Reviewer) -> Option<String> {
    crate::secretkeys::master_key(&reviewer.client, &reviewer.system_namespace).await.ok().flatten()
}

/// The mutation for one request: secret key values are encrypted with the master key of
/// `KubeDirectorConfig` (never stored in the clear), and a config without a master key gets
/// a generated one, as upstream.
pub async fn mutate_request(reviewer: &Reviewer, req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    if req.operation == Operation::Delete {
        return response;
    }
    let ops = match req.kind.kind.as_str() {
        "KubeDirectorCluster" => secret_key_patch(reviewer, req).await,
        "KubeDirectorConfig" => match typed::<KubeDirectorConfig>(&req.object) {
            Ok(Some(c)) if c.spec.master_encryption_key.is_none() => match crate::secretkeys::generate_key() {
                Ok(key) => Ok(vec![json!({"op": "add", "path": "/spec/masterEncryptionKey", "value": key})]),
                Err(e) => Err(e.to_string()),
            },
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(e),
        },
        _ => Ok(Vec::new()),
    };
    match ops {
        Ok(ops) if ops.is_empty() => response,
        Ok(ops) => match serde_json::from_value::<json_patch::Patch>(serde_json::Value::Array(ops)) {
            Ok(patch) => {
                response.with_patch(patch).unwrap_or_else(|e| AdmissionResponse::from(req).deny(e.to_string()))
            }
            Err(e) => response.deny(e.to_string()),
        },
        Err(message) => {
            info!(kind = %req.kind.kind, name = %req.name, "rejected: {message}");
            response.deny(message)
        }
    }
}

async fn secret_key_patch(
    reviewer: &Reviewer,
    req: &AdmissionRequest<DynamicObject>,
) -> Result<Vec<serde_json::Value>, String> {
    let Some(new) = typed::<KubeDirectorCluster>(&req.object)? else { return Ok(Vec::new()) };
    let old: Option<KubeDirectorCluster> = typed(&req.old_object)?;
    let mut ops = Vec::new();
    let mut master: Option<Option<String>> = None;
    for (i, role) in new.spec.roles.iter().enumerate() {
        for (j, key) in role.secret_keys.iter().enumerate() {
            let path = format!("spec.roles[{i}].secretKeys[{j}]");
            match (key.value.as_deref().filter(|v| !v.is_empty()), key.encrypted_value.as_deref()) {
                (Some(plain), _) => {
                    if master.is_none() {
                        master = Some(master_key(reviewer).await);
                    }
                    let Some(Some(master_hex)) = &master else {
                        return Err(format!(
                            "{path}: cannot encrypt secret key {}: no masterEncryptionKey in KubeDirectorConfig {}/{} (rule: secret-key-encryption)",
                            key.name,
                            reviewer.system_namespace,
                            kdfed_crds::config::CONFIG_NAME
                        ));
                    };
                    let previous: Vec<_> = old
                        .iter()
                        .flat_map(|o| {
                            o.spec.roles.iter().filter(|r| r.id == role.id).flat_map(|r| r.secret_keys.clone())
                        })
                        .collect();
                    let sealed =
                        crate::secretkeys::seal_value(master_hex, &key.name, plain, &previous).map_err(|e| {
                            format!("{path}: cannot encrypt secret key {}: {e} (rule: secret-key-encryption)", key.name)
                        })?;
                    ops.push(json!({"op": "replace", "path": format!("/spec/roles/{i}/secretKeys/{j}"),
                        "value": {"name": key.name, "encryptedValue": sealed}}));
                }
                (None, Some(sealed)) => {
                    let kept = old.as_ref().is_some_and(|o| {
                        o.spec
                            .roles
                            .iter()
                            .filter(|r| r.id == role.id)
                            .flat_map(|r| &r.secret_keys)
                            .any(|k| k.name == key.name && k.encrypted_value.as_deref() == Some(sealed))
                    });
                    // Hub sync (this component) stores copies with ciphertexts it made with
                    // this member's key; nobody else may set one.
                    let own = reviewer.own_user.is_some() && req.user_info.username == reviewer.own_user;
                    if !kept && own {
                        if master.is_none() {
                            master = Some(master_key(reviewer).await);
                        }
                        let readable = master
                            .as_ref()
                            .and_then(|m| m.as_deref())
                            .is_some_and(|m| crate::secretkeys::decrypt(m, sealed).is_ok());
                        if !readable {
                            return Err(format!(
                                "{path}.encryptedValue: secret key ({}) does not decrypt with the master key of KubeDirectorConfig {}/{} (rule: secret-key-encryption)",
                                key.name,
                                reviewer.system_namespace,
                                kdfed_crds::config::CONFIG_NAME
                            ));
                        }
                    } else if !kept {
                        return Err(format!(
                            "{path}.encryptedValue: manually setting secret key ({}) encrypted value is forbidden (rule: secret-key-encryption)",
                            key.name
                        ));
                    }
                }
                (None, None) => {}
            }
        }
    }
    if let Some(op) = scrub_last_applied(&new, &ops) {
        ops.push(op);
    }
    Ok(ops)
}

/// kubectl's record of the last applied manifest, kept in an annotation.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `kubectl apply` keeps the applied manifest, plain secret-key values included, in the
/// [`LAST_APPLIED`] annotation. The patch that stores each such value as it is stored in
/// the spec (its ciphertext), or without the value where the spec has none; `None` when
/// the annotation holds no plain value. `ops` are the spec's secret-key replacements.
pub fn scrub_last_applied(cluster: &KubeDirectorCluster, ops: &[serde_json::Value]) -> Option<serde_json::Value> {
    let text = cluster.metadata.annotations.as_ref()?.get(LAST_APPLIED)?;
    let mut applied: serde_json::Value = serde_json::from_str(text).ok()?;
    // The stored form of every key: replaced ones from `ops`, the others as they are.
    let mut stored: std::collections::BTreeMap<(String, String), serde_json::Value> = Default::default();
    for (i, role) in cluster.spec.roles.iter().enumerate() {
        for (j, key) in role.secret_keys.iter().enumerate() {
            let path = format!("/spec/roles/{i}/secretKeys/{j}");
            let replaced = ops.iter().find(|o| o["path"] == path.as_str()).map(|o| o["value"].clone());
            let value = replaced
                .or_else(|| key.encrypted_value.as_ref().map(|e| json!({"name": key.name, "encryptedValue": e})));
            if let Some(v) = value {
                stored.insert((role.id.clone(), key.name.clone()), v);
            }
        }
    }
    let mut changed = false;
    for role in applied.pointer_mut("/spec/roles")?.as_array_mut()? {
        let id = role["id"].as_str().unwrap_or_default().to_string();
        let Some(keys) = role.get_mut("secretKeys").and_then(|k| k.as_array_mut()) else { continue };
        for key in keys {
            if key.get("value").is_none() {
                continue;
            }
            let name = key["name"].as_str().unwrap_or_default().to_string();
            *key = match stored.get(&(id.clone(), name.clone())) {
                Some(s) => s.clone(),
                None => json!({"name": name}),
            };
            changed = true;
        }
    }
    changed.then(|| {
        json!({"op": "replace", "path": "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
               "value": format!("{applied}\n")})
    })
}

/// Secrets mounted into members must exist and carry `requiredSecretPrefix` (upstream's
/// rules and wording).
async fn check_secrets(
    reviewer: &Reviewer,
    ns: &str,
    spec: &kdfed_crds::KubeDirectorClusterSpec,
    config: Option<&kdfed_crds::KubeDirectorConfigSpec>,
) -> Result<(), String> {
    let prefix = config.and_then(|c| c.required_secret_prefix.clone()).unwrap_or_default();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(reviewer.client.clone(), ns);
    let mut errors = Vec::new();
    let mut wanted: Vec<(String, String, Option<String>)> = Vec::new();
    if let Some(s) = &spec.default_secret {
        wanted.push(("spec.defaultSecret.name".into(), s.name.clone(), None));
    }
    for (i, role) in spec.roles.iter().enumerate() {
        if let Some(s) = &role.secret {
            wanted.push((format!("spec.roles[{i}].secret.name"), s.name.clone(), Some(role.id.clone())));
        }
    }
    for (path, name, role) in wanted {
        if !name.starts_with(&prefix) {
            errors.push(match &role {
                None => format!("{path}: defaultSecret({name}) does not have the required name prefix({prefix}). (rule: secret-prefix)"),
                Some(r) => format!("{path}: Secret({name}) for role({r}) does not have the required name prefix({prefix}). (rule: secret-prefix)"),
            });
            continue;
        }
        let found = secrets.get_opt(&name).await.map_err(|e| format!("cannot read Secret {name}: {e}"))?;
        if found.is_none() {
            errors.push(match &role {
                None => {
                    format!("{path}: Unable to find defaultSecret({name}) in namespace({ns}). (rule: secret-exists)")
                }
                Some(r) => format!(
                    "{path}: Unable to find secret({name}) for role({r}) in namespace({ns}). (rule: secret-exists)"
                ),
            });
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors.join("\n")) }
}

fn review_member(req: &AdmissionRequest<DynamicObject>) -> Result<(), String> {
    let Some(member) = typed::<KubeDirectorMember>(&req.object)? else { return Ok(()) };
    let mut errors = validate::ValidationErrors::default();
    let name = member.name_any();
    if !validate::is_dns_label(&name) || name.len() > 40 {
        return Err(format!(
            "metadata.name: member name {name:?} must be a DNS label of at most 40 characters (rule: member-name)"
        ));
    }
    validate::label_errors(member.labels(), "metadata.labels", &mut errors);
    if let Some(join) = &member.spec.join
        && let Err(e) = crate::join::validate_public_key(&join.public_key)
    {
        return Err(format!("spec.join.publicKey: {e} (rule: join-key)"));
    }
    for (i, t) in member.spec.taints.iter().enumerate() {
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()) {
            return Err(format!(
                "spec.taints[{i}].effect: effect({}) must be NoSchedule, PreferNoSchedule or NoExecute (rule: taint-effect)",
                t.effect
            ));
        }
    }
    errors.into_result().map_err(|e| e.to_string())
}

fn review_config(req: &AdmissionRequest<DynamicObject>) -> Result<(), String> {
    let Some(config) = typed::<KubeDirectorConfig>(&req.object)? else { return Ok(()) };
    validate::config(&config.spec).map_err(|e| e.to_string())
}

/// Name of the ValidatingWebhookConfiguration a component registers.
pub fn configuration_name(component: &str) -> String {
    format!("{component}.kubedirector.hpe.com")
}

/// How the API server reaches a webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A URL (a webhook outside the cluster, or on loopback in the test bed).
    Url(String),
    /// A Service in the cluster (the shipped `deploy/hub` configurations use this).
    Service {
        /// Namespace of the Service.
        namespace: String,
        /// Name of the Service.
        name: String,
        /// Port of the Service.
        port: u16,
    },
}

impl Endpoint {
    /// Parses `webhook.service`: `namespace/name` or `namespace/name:port` (port 443 by default).
    pub fn service(text: &str) -> Result<Endpoint, String> {
        let rule = "webhook.service: must be namespace/name or namespace/name:port";
        let (namespace, rest) = text.split_once('/').ok_or_else(|| format!("{rule}, not {text:?}"))?;
        let (name, port) = match rest.split_once(':') {
            Some((name, port)) => (name, port.parse::<u16>().map_err(|_| format!("{rule}, not {text:?}"))?),
            None => (rest, 443),
        };
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !label(namespace) || !label(name) || port == 0 {
            return Err(format!("{rule} (DNS labels, port 1-65535), not {text:?}"));
        }
        Ok(Endpoint::Service { namespace: namespace.into(), name: name.into(), port })
    }

    fn client_config(&self, path: &str, ca: &str) -> serde_json::Value {
        match self {
            Endpoint::Url(url) => json!({"url": format!("{}{path}", url.trim_end_matches('/')), "caBundle": ca}),
            Endpoint::Service { namespace, name, port } => json!({
                "service": {"namespace": namespace, "name": name, "port": port, "path": path},
                "caBundle": ca,
            }),
        }
    }
}

/// Registers (server-side apply) the webhook for kdfed's kinds with `failurePolicy: Fail`,
/// reached at `endpoint`, trusted through `ca_pem`. With a Service endpoint this fills in
/// the `caBundle` of the configurations `deploy/hub` ships (same names and webhooks).
pub async fn register(
    client: &Client,
    component: &str,
    endpoint: &Endpoint,
    ca_pem: &str,
    field_manager: &str,
) -> Result<(), kube::Error> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let hook = |name: &str, group: &str, resources: &[&str], ops: &[&str]| {
        json!({
            "name": format!("{name}.{component}.kubedirector.hpe.com"),
            "clientConfig": endpoint.client_config(PATH, &ca),
            "rules": [{"apiGroups": [group], "apiVersions": ["*"], "operations": ops, "resources": resources, "scope": "*"}],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        })
    };
    let name = configuration_name(component);
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            hook("apps", "kubedirector.hpe.com", &["kubedirectorapps"], &["CREATE", "UPDATE", "DELETE"]),
            hook("clusters", "kubedirector.hpe.com", &["kubedirectorclusters"], &["CREATE", "UPDATE"]),
            hook("configs", "kubedirector.hpe.com", &["kubedirectorconfigs"], &["CREATE", "UPDATE"]),
            hook("members", "federation.kubedirector.hpe.com", &["kubedirectormembers"], &["CREATE", "UPDATE"]),
        ]
    });
    let api: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        Api::all(client.clone());
    api.patch(&name, &PatchParams::apply(field_manager).force(), &Patch::Apply(config)).await?;
    let mutating_hook = |name: &str, resources: &[&str]| {
        json!({
            "name": format!("{name}.mutate.{component}.kubedirector.hpe.com"),
            "clientConfig": endpoint.client_config(MUTATE_PATH, &ca),
            "rules": [{"apiGroups": ["kubedirector.hpe.com"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": resources, "scope": "*"}],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "reinvocationPolicy": "Never",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        })
    };
    let mutating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [mutating_hook("clusters", &["kubedirectorclusters"]), mutating_hook("configs", &["kubedirectorconfigs"])]
    });
    let api: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> = Api::all(client.clone());
    api.patch(&name, &PatchParams::apply(field_manager).force(), &Patch::Apply(mutating)).await?;
    Ok(())
}

/// Webhook settings shared by the hub and the spoke (standalone mode).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Address the webhook listens on.
    pub address: SocketAddr,
    /// Serving certificate (PEM); the webhook is off unless this and `key_file` are set.
    pub cert_file: Option<PathBuf>,
    /// Serving key (PEM).
    pub key_file: Option<PathBuf>,
    /// CA that signed the serving certificate, for the registration's `caBundle`.
    pub ca_file: Option<PathBuf>,
    /// URL the API server calls; with `ca_file`, the component registers the webhook itself.
    pub url: Option<String>,
    /// Service the API server calls (`namespace/name[:port]`, port 443 by default); with
    /// `ca_file`, the component registers the webhook itself through that Service (and so
    /// fills in the `caBundle` of the configurations `deploy/hub` ships).
    pub service: Option<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            address: SocketAddr::from(([127, 0, 0, 1], 9443)),
            cert_file: None,
            key_file: None,
            ca_file: None,
            url: None,
            service: None,
        }
    }
}

impl WebhookSettings {
    /// Checks that the settings are complete where they need to be.
    pub fn validate(&self) -> Result<(), String> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("webhook.cert_file and webhook.key_file: set both or neither".into());
        }
        if self.url.is_some() && self.service.is_some() {
            return Err("webhook.service and webhook.url: set one or the other".into());
        }
        if self.url.is_some() && (self.ca_file.is_none() || self.cert_file.is_none()) {
            return Err("webhook.url: registering the webhook needs webhook.ca_file and a serving certificate".into());
        }
        if let Some(service) = &self.service {
            if self.ca_file.is_none() || self.cert_file.is_none() {
                return Err(
                    "webhook.service: registering the webhook needs webhook.ca_file and a serving certificate".into()
                );
            }
            Endpoint::service(service)?;
        }
        Ok(())
    }

    /// Starts the webhook (if configured) and registers it (if a URL is given).
    /// `trust_own_ciphertexts`: the component's own writes may carry secret-key ciphertexts
    /// (see [`Reviewer::own_user`]).
    pub async fn start(
        &self,
        client: &Client,
        system_namespace: &str,
        component: &str,
        metrics: Arc<crate::observe::WebhookMetrics>,
        trust_own_ciphertexts: bool,
    ) -> Result<Option<SocketAddr>, String> {
        let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) else { return Ok(None) };
        let reviewer = Reviewer {
            client: client.clone(),
            system_namespace: system_namespace.to_string(),
            own_user: if trust_own_ciphertexts { own_user(client).await } else { None },
        };
        let bound =
            serve(self.address, cert.clone(), key.clone(), reviewer, metrics).await.map_err(|e| e.to_string())?;
        let endpoint = match (&self.url, &self.service) {
            (Some(url), _) => Some(Endpoint::Url(url.clone())),
            (None, Some(service)) => Some(Endpoint::service(service)?),
            (None, None) => None,
        };
        if let (Some(endpoint), Some(ca)) = (endpoint, &self.ca_file) {
            let ca_pem = std::fs::read_to_string(ca).map_err(|e| format!("webhook.ca_file {}: {e}", ca.display()))?;
            register(client, component, &endpoint, &ca_pem, component)
                .await
                .map_err(|e| format!("register the webhook: {e}"))?;
            info!(?endpoint, "admission webhook registered");
        }
        Ok(Some(bound))
    }
}

/// Command-line flags of the webhook, shared by the hub and the spoke.
#[derive(clap::Args, Debug, Default)]
pub struct WebhookArgs {
    /// Webhook listen address.
    #[arg(long)]
    pub webhook_address: Option<String>,
    /// Webhook serving certificate (PEM).
    #[arg(long)]
    pub webhook_cert_file: Option<String>,
    /// Webhook serving key (PEM).
    #[arg(long)]
    pub webhook_key_file: Option<String>,
    /// CA of the webhook certificate (for registration).
    #[arg(long)]
    pub webhook_ca_file: Option<String>,
    /// URL the API server calls the webhook at; set to register it.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Service the API server calls the webhook through (namespace/name[:port]); set to
    /// register it (fills in the caBundle of the shipped configurations).
    #[arg(long)]
    pub webhook_service: Option<String>,
}

impl WebhookArgs {
    /// The flags as configuration overrides (`webhook.*` keys).
    pub fn overrides(self) -> [(&'static str, Option<String>); 6] {
        [
            ("webhook.address", self.webhook_address),
            ("webhook.cert_file", self.webhook_cert_file),
            ("webhook.key_file", self.webhook_key_file),
            ("webhook.ca_file", self.webhook_ca_file),
            ("webhook.url", self.webhook_url),
            ("webhook.service", self.webhook_service),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_services_are_namespace_name_and_port() {
        assert_eq!(
            Endpoint::service("kdfed-system/kdfed-hub"),
            Ok(Endpoint::Service { namespace: "kdfed-system".into(), name: "kdfed-hub".into(), port: 443 })
        );
        assert_eq!(
            Endpoint::service("ops/hub:8443"),
            Ok(Endpoint::Service { namespace: "ops".into(), name: "hub".into(), port: 8443 })
        );
        for bad in ["kdfed-hub", "ns/", "/hub", "ns/hub:0", "ns/hub:http", "NS/hub", "ns/hub:70000"] {
            let e = Endpoint::service(bad).expect_err(bad);
            assert!(e.starts_with("webhook.service: must be namespace/name"), "{bad}: {e}");
        }
        let settings = WebhookSettings {
            service: Some("kdfed-system/kdfed-hub".into()),
            url: Some("https://127.0.0.1:9443".into()),
            ..WebhookSettings::default()
        };
        assert_eq!(settings.validate(), Err("webhook.service and webhook.url: set one or the other".into()));
        let settings = WebhookSettings { service: Some("kdfed-system/kdfed-hub".into()), ..WebhookSettings::default() };
        assert!(settings.validate().unwrap_err().contains("needs webhook.ca_file"));
    }

    #[test]
    fn kubectl_s_copy_of_a_secret_value_is_stored_as_the_spec_stores_it() {
        let applied = json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": "c"}, "spec": {"app": "a", "roles": [
                {"id": "w", "members": 1, "secretKeys": [{"name": "pw", "value": "hunter2"}, {"name": "old", "value": "x"}]},
                {"id": "m", "members": 1}]}});
        let cluster: KubeDirectorCluster = serde_json::from_value(json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": "c", "annotations": {LAST_APPLIED: format!("{applied}\n")}},
            "spec": {"app": "a", "roles": [
                {"id": "w", "members": 1, "secretKeys": [{"name": "pw", "value": "hunter2"}, {"name": "old", "encryptedValue": "abcd"}]},
                {"id": "m", "members": 1}]}}))
        .expect("cluster");
        let ops = vec![json!({"op": "replace", "path": "/spec/roles/0/secretKeys/0",
            "value": {"name": "pw", "encryptedValue": "0123"}})];
        let op = scrub_last_applied(&cluster, &ops).expect("scrubbed");
        let text = op["value"].as_str().expect("string");
        assert!(!text.contains("hunter2") && !text.contains("\"x\""), "{text}");
        let scrubbed: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(scrubbed["spec"]["roles"][0]["secretKeys"][0], json!({"name": "pw", "encryptedValue": "0123"}));
        assert_eq!(scrubbed["spec"]["roles"][0]["secretKeys"][1], json!({"name": "old", "encryptedValue": "abcd"}));
        assert_eq!(op["path"], "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration");
        // Nothing to scrub: no patch.
        let mut clean = cluster.clone();
        clean.metadata.annotations =
            Some([(LAST_APPLIED.to_string(), format!("{}", json!({"spec": {"roles": []}})))].into());
        assert_eq!(scrub_last_applied(&clean, &ops), None);
    }

    #[test]
    fn type_errors_name_the_field() {
        let cluster = |roles: serde_json::Value| -> Option<DynamicObject> {
            Some(
                serde_json::from_value(json!({
                    "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
                    "metadata": {"name": "db", "namespace": "default"},
                    "spec": {"app": "cassandra", "roles": roles},
                }))
                .expect("dynamic object"),
            )
        };
        let e = typed::<KubeDirectorCluster>(&cluster(json!([{"id": "seed", "members": "seven"}]))).expect_err("type");
        assert!(e.starts_with("spec.roles[0].members: malformed object: invalid type: string \"seven\""), "{e}");
        assert!(e.ends_with("(rule: type)"), "{e}");
        let e = typed::<KubeDirectorCluster>(&cluster(json!([{"id": 7}]))).expect_err("type");
        assert!(e.starts_with("spec.roles[0].id: malformed object: invalid type: integer `7`"), "{e}");
        let e = typed::<KubeDirectorCluster>(&cluster(json!("seed"))).expect_err("type");
        assert!(e.starts_with("spec.roles: malformed object: invalid type: string"), "{e}");
        let ok = typed::<KubeDirectorCluster>(&cluster(json!([{"id": "seed", "members": 2}]))).expect("well typed");
        assert_eq!(ok.map(|c| c.spec.roles[0].members), Some(Some(2)));
        assert!(matches!(typed::<KubeDirectorCluster>(&None), Ok(None)));
    }
}
