//! The pages a user reads: the catalog, the launch form (and its submission), the cluster
//! list and a cluster's page, with the small JSON answers their live updates poll.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kdfed_crds::federation::KubeDirectorMember;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use super::{Console, Shared, User, api_failure, poster, render, user};
use crate::templates::{CatalogPage, ClusterTemplate, ClustersPage, EventView, LaunchPage};
use crate::views::catalog::{AppView, app_view};
use crate::views::cluster::{page, row};
use crate::views::launch::{FieldMessages, FormInput, build_cluster, placement_labels, refusal_fields};
use crate::views::namespaces;
use crate::views::placement::{self, Matching};

/// `?namespace=` of list pages.
#[derive(Debug, Default, Deserialize)]
pub struct NamespaceQuery {
    /// The namespace to show (default: the user's own).
    pub namespace: Option<String>,
}

fn chosen_namespace(user: &User, query: &NamespaceQuery) -> String {
    query.namespace.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| user.home.clone())
}

/// `GET /catalog`: the apps of the user's namespace and of the system catalog they may read.
pub async fn catalog(State(console): State<Shared>, headers: HeaderMap, Query(q): Query<NamespaceQuery>) -> Response {
    let user = match user(&console, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let namespace = chosen_namespace(&user, &q);
    let mut apps = Vec::new();
    let mut notes = Vec::new();
    let mut refused = 0;
    for (ns, which) in
        [(namespace.as_str(), "your namespace"), (console.system_namespace.as_str(), "the system catalog")]
    {
        match Api::<KubeDirectorApp>::namespaced(user.client.clone(), ns).list(&ListParams::default()).await {
            Ok(list) => apps.extend(list.items.iter().map(|a| app_view(a, &console.system_namespace))),
            Err(kube::Error::Api(e)) if e.code == 403 => {
                refused += 1;
                notes.push(format!("You are not allowed to list the apps of {which} ({ns})."));
            }
            Err(e) => return api_failure(&console, &user, &namespace, &format!("list the apps of {ns}"), e),
        }
    }
    if refused == 2 {
        return api_failure(
            &console,
            &user,
            &namespace,
            &format!("list apps in {namespace} or the system catalog"),
            forbidden(),
        );
    }
    render(&CatalogPage { chrome: user.chrome(&console, &namespace), apps, notes })
}

fn forbidden() -> kube::Error {
    kube::Error::Api(kube::core::Status::failure("", "Forbidden").with_code(403).boxed())
}

async fn find_app(console: &Console, user: &User, namespace: &str, name: &str) -> Result<AppView, Response> {
    let api = Api::<KubeDirectorApp>::namespaced(user.client.clone(), namespace);
    match api.get(name).await {
        Ok(app) => Ok(app_view(&app, &console.system_namespace)),
        Err(e) => Err(api_failure(console, user, namespace, &format!("read app {name} in {namespace}"), e)),
    }
}

/// The member clusters the user may list (for placement labels), `None` when not allowed.
async fn members(client: &Client) -> Option<Vec<KubeDirectorMember>> {
    Api::<KubeDirectorMember>::all(client.clone()).list(&ListParams::default()).await.ok().map(|l| l.items)
}

/// The namespaces `user` may create clusters in (see [`crate::views::namespaces`]): the
/// candidates, each checked with a `SelfSubjectAccessReview` for `create
/// kubedirectorclusters`, a few at a time.
async fn offered_namespaces(user: &User) -> Vec<String> {
    use futures::StreamExt;
    let listed = Api::<Namespace>::all(user.client.clone())
        .list_metadata(&ListParams::default())
        .await
        .ok()
        .map(|l| l.items.iter().map(|n| n.name_any()).collect::<Vec<_>>());
    let seen = match listed {
        Some(_) => Vec::new(),
        None => Api::<KubeDirectorCluster>::all(user.client.clone())
            .list_metadata(&ListParams::default())
            .await
            .map(|l| l.items.iter().filter_map(|c| c.namespace()).collect())
            .unwrap_or_default(),
    };
    let candidates = namespaces::candidates(listed, &user.home, &seen);
    let checks =
        candidates.into_iter().map(|ns| async move { may_create_clusters(&user.client, &ns).await.then_some(ns) });
    let allowed: Vec<Option<String>> = futures::stream::iter(checks).buffered(8).collect().await;
    allowed.into_iter().flatten().collect()
}

/// Whether the client's identity may create clusters in `namespace` (a refused or failed
/// review counts as no).
async fn may_create_clusters(client: &Client, namespace: &str) -> bool {
    let review: SelfSubjectAccessReview = match serde_json::from_value(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": namespace, "verb": "create",
            "group": "kubedirector.hpe.com", "resource": "kubedirectorclusters"}}
    })) {
        Ok(r) => r,
        Err(_) => return false,
    };
    let api = Api::<SelfSubjectAccessReview>::all(client.clone());
    api.create(&PostParams::default(), &review).await.ok().and_then(|r| r.status).is_some_and(|s| s.allowed)
}

/// How the members answer the form's placement: matching, available, and with room for the
/// cluster the form describes (`None` without labels chosen or when members cannot be listed).
fn placement_answer(fleet: &[KubeDirectorMember], app: &AppView, input: &FormInput) -> Option<Matching> {
    let wanted = placement_labels(input).ok().filter(|w| !w.is_empty())?;
    // The room is judged on the cluster the form describes; name and namespace do not matter.
    let mut described = input.clone();
    described.fields.insert("name".into(), "room".into());
    described.fields.insert("namespace".into(), "room".into());
    let cluster = build_cluster(app, &described).ok();
    Some(placement::matching_with_room(fleet, &wanted, cluster.as_ref().map(|c| &c.spec)))
}

async fn launch_page(
    console: &Console,
    user: &User,
    app: AppView,
    mut input: FormInput,
    errors: FieldMessages,
    status: StatusCode,
) -> Response {
    let fleet = members(&user.client).await;
    let matching = fleet.as_deref().and_then(|fleet| placement_answer(fleet, &app, &input));
    let offers = fleet.as_deref().map(placement::offers);
    let mut namespaces = offered_namespaces(user).await;
    if app.catalog != "system" {
        // A namespace's own app launches clusters in that namespace only.
        namespaces.retain(|n| *n == app.namespace);
    }
    let namespace = namespaces::preselect(&namespaces, input.get("namespace"));
    input.fields.insert("namespace".into(), namespace.clone());
    let chrome = user.chrome(console, &namespace);
    let page = LaunchPage { chrome, app, input, errors, offers, matching, namespaces };
    (status, render(&page)).into_response()
}

/// `GET /launch/{namespace}/{app}`: the launch form of an app.
pub async fn launch_form(
    State(console): State<Shared>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let user = match user(&console, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let app = match find_app(&console, &user, &namespace, &name).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut input = FormInput::default();
    let target = if app.catalog == "system" { user.home.clone() } else { namespace };
    input.fields.insert("namespace".into(), target);
    for r in &app.roles {
        input.fields.insert(crate::views::launch::members_field(&r.id), r.default_members().to_string());
    }
    for c in &app.choices {
        input.fields.insert(crate::views::launch::choice_field(&c.id), c.default.clone());
    }
    launch_page(&console, &user, app, input, FieldMessages::new(), StatusCode::OK).await
}

/// `POST /launch/{namespace}/{app}`: creates the cluster on the hub, or shows the form again
/// with the hub's refusal at the fields it names and the user's input kept.
pub async fn launch(
    State(console): State<Shared>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let user = match poster(&console, &headers, &form) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let app = match find_app(&console, &user, &namespace, &name).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let input = FormInput::from_pairs(form);
    let cluster = match build_cluster(&app, &input) {
        Ok(c) => c,
        Err(errors) => return launch_page(&console, &user, app, input, errors, StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    let target = cluster.namespace().unwrap_or_default();
    let api = Api::<KubeDirectorCluster>::namespaced(user.client.clone(), &target);
    match api.create(&PostParams::default(), &cluster).await {
        Ok(created) => Redirect::to(&format!("/clusters/{target}/{}", created.name_any())).into_response(),
        // An admission webhook's refusal comes as 403 too; it names fields, RBAC does not.
        Err(kube::Error::Api(e)) if e.code == 403 && !e.message.contains("denied the request") => {
            let mut errors = FieldMessages::new();
            errors.insert(
                "namespace".into(),
                vec![format!("You ({}) are not allowed to create clusters in {target}.", user.name)],
            );
            launch_page(&console, &user, app, input, errors, StatusCode::FORBIDDEN).await
        }
        Err(kube::Error::Api(e)) if e.code == 401 => Redirect::to("/sign-in").into_response(),
        Err(kube::Error::Api(e)) => {
            let roles: Vec<String> = cluster.spec.roles.iter().map(|r| r.id.clone()).collect();
            let errors = refusal_fields(&e.message, &roles);
            launch_page(&console, &user, app, input, errors, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => super::failure(Some(user.chrome(&console, &target)), &format!("Could not create the cluster: {e}")),
    }
}

async fn list_clusters(user: &User, namespace: &str) -> Result<Vec<KubeDirectorCluster>, kube::Error> {
    let api = Api::<KubeDirectorCluster>::namespaced(user.client.clone(), namespace);
    api.list(&ListParams::default()).await.map(|l| l.items)
}

/// `GET /placement.json?label=k=v&labels=...&app=NS/NAME&members.ROLE=...`: how many member
/// clusters match the labels, how many of those are available and (with `app` and the
/// form's fields) how many have room for the cluster the form describes, for the launch
/// form's live count; 403 when the user may not list member clusters.
pub async fn placement_json(
    State(console): State<Shared>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let user = match user(&console, &headers) {
        Ok(u) => u,
        Err(_) => return StatusCode::UNAUTHORIZED.into_response(),
    };
    let input = FormInput::from_pairs(pairs);
    let wanted = match placement_labels(&input) {
        Ok(w) => w,
        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"text": e}))).into_response(),
    };
    let Some(fleet) = members(&user.client).await else { return StatusCode::FORBIDDEN.into_response() };
    let app = match input.get("app").split_once('/') {
        Some((ns, name)) => find_app(&console, &user, ns, name).await.ok(),
        None => None,
    };
    let answer = match &app {
        Some(app) if !wanted.is_empty() => placement_answer(&fleet, app, &input),
        _ => None,
    };
    let answer = answer.unwrap_or_else(|| placement::matching_with_room(&fleet, &wanted, None));
    // As on the page: no sentence until a label is chosen.
    let text = if wanted.is_empty() { String::new() } else { crate::templates::matching_text(&answer) };
    Json(serde_json::json!({"matching": answer.matching, "available": answer.available, "room": answer.room, "text": text}))
        .into_response()
}

/// `GET /clusters`: the user's clusters in a namespace.
pub async fn clusters(State(console): State<Shared>, headers: HeaderMap, Query(q): Query<NamespaceQuery>) -> Response {
    let user = match user(&console, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let namespace = chosen_namespace(&user, &q);
    match list_clusters(&user, &namespace).await {
        Ok(list) => {
            render(&ClustersPage { chrome: user.chrome(&console, &namespace), rows: list.iter().map(row).collect() })
        }
        Err(e) => api_failure(&console, &user, &namespace, &format!("list clusters in {namespace}"), e),
    }
}

/// `GET /clusters.json`: the list's rows, for live updates.
pub async fn clusters_json(
    State(console): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<NamespaceQuery>,
) -> Response {
    let user = match user(&console, &headers) {
        Ok(u) => u,
        Err(_) => return StatusCode::UNAUTHORIZED.into_response(),
    };
    let namespace = chosen_namespace(&user, &q);
    match list_clusters(&user, &namespace).await {
        Ok(list) => Json(list.iter().map(row).collect::<Vec<_>>()).into_response(),
        Err(kube::Error::Api(e)) => StatusCode::from_u16(e.code).unwrap_or(StatusCode::BAD_GATEWAY).into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn events(client: &Client, namespace: &str, name: &str) -> Option<Vec<EventView>> {
    let api = Api::<Event>::namespaced(client.clone(), namespace);
    let params =
        ListParams::default().fields(&format!("involvedObject.name={name},involvedObject.kind=KubeDirectorCluster"));
    let mut list = api.list(&params).await.ok()?.items;
    list.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0).or(e.event_time.clone().map(|t| t.0)));
    Some(
        list.iter()
            .rev()
            .take(20)
            .map(|e| EventView {
                time: e
                    .last_timestamp
                    .as_ref()
                    .map(|t| t.0.strftime("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
                kind: e.type_.clone().unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                message: e.message.clone().unwrap_or_default(),
            })
            .collect(),
    )
}

/// The apps a cluster with `app_catalog` can name that the user may read (a local app hides
/// a system one of the same name); a catalog the user may not list is left out.
async fn readable_apps(user: &User, namespace: &str, system: &str, app_catalog: Option<&str>) -> Vec<KubeDirectorApp> {
    use kdfed_crds::cluster::{APP_CATALOG_LOCAL, APP_CATALOG_SYSTEM};
    let list = |ns: &str| {
        let api = Api::<KubeDirectorApp>::namespaced(user.client.clone(), ns);
        async move { api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() }
    };
    let mut apps = if app_catalog == Some(APP_CATALOG_SYSTEM) { Vec::new() } else { list(namespace).await };
    if app_catalog != Some(APP_CATALOG_LOCAL) {
        for app in list(system).await {
            if !apps.iter().any(|a| a.metadata.name == app.metadata.name) {
                apps.push(app);
            }
        }
    }
    apps
}

/// The cluster page of `namespace/name` for `user`, with `errors` of a refused change.
pub async fn cluster_page(
    console: &Console,
    user: &User,
    namespace: &str,
    name: &str,
    errors: FieldMessages,
    status: StatusCode,
) -> Response {
    let api = Api::<KubeDirectorCluster>::namespaced(user.client.clone(), namespace);
    let c = match api.get(name).await {
        Ok(c) => c,
        Err(e) => return api_failure(console, user, namespace, &format!("read cluster {name} in {namespace}"), e),
    };
    let catalog = readable_apps(user, namespace, &console.system_namespace, c.spec.app_catalog.as_deref()).await;
    let app = catalog.iter().find(|a| a.metadata.name.as_deref() == Some(c.spec.app.as_str()));
    let view = page(&c, app, &catalog);
    let events = events(&user.client, namespace, name).await;
    let page = ClusterTemplate { chrome: user.chrome(console, namespace), page: view, events, errors };
    (status, render(&page)).into_response()
}

/// `GET /clusters/{namespace}/{name}`.
pub async fn cluster(
    State(console): State<Shared>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match user(&console, &headers) {
        Ok(user) => cluster_page(&console, &user, &namespace, &name, BTreeMap::new(), StatusCode::OK).await,
        Err(r) => r,
    }
}

/// `GET /clusters/{namespace}/{name}/status.json`: the row and members' states, for live updates.
pub async fn cluster_json(
    State(console): State<Shared>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let user = match user(&console, &headers) {
        Ok(u) => u,
        Err(_) => return StatusCode::UNAUTHORIZED.into_response(),
    };
    let api = Api::<KubeDirectorCluster>::namespaced(user.client.clone(), &namespace);
    match api.get(&name).await {
        Ok(c) => {
            let p = page(&c, None, &[]);
            let members: Vec<_> = p.roles.iter().flat_map(|r| r.members.iter().cloned()).collect();
            Json(serde_json::json!({"row": p.row, "members": members})).into_response()
        }
        Err(kube::Error::Api(e)) => StatusCode::from_u16(e.code).unwrap_or(StatusCode::BAD_GATEWAY).into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
