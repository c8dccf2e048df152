//! What a user may change on a running cluster: members per role, mutable choices, the app
//! (an allowed upgrade or rollback), and deletion after a confirmation that says what
//! happens to the data. Each change is one patch of the cluster on the hub, made with the
//! user's identity; a refusal is shown on the cluster page at the field it names.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use kdfed_crds::KubeDirectorCluster;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::pages::cluster_page;
use super::{Console, Shared, User, api_failure, poster, render, user};
use crate::templates::DeletePage;
use crate::views::cluster::{deletion_text, row};
use crate::views::launch::{FieldMessages, choice_field, members_field, refusal_fields};

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim())
}

/// Applies `patch` (a merge patch carrying the resource version read, so a concurrent
/// change is refused rather than overwritten) and answers with the cluster page.
async fn patch(
    console: &Console,
    user: &User,
    namespace: &str,
    name: &str,
    patch: Value,
    roles: &[String],
) -> Response {
    let api = Api::<KubeDirectorCluster>::namespaced(user.client.clone(), namespace);
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Redirect::to(&format!("/clusters/{namespace}/{name}")).into_response(),
        Err(kube::Error::Api(e))
            if e.code == 422 || e.code == 400 || e.code == 409 || e.message.contains("denied the request") =>
        {
            let errors = refusal_fields(&e.message, roles);
            cluster_page(console, user, namespace, name, errors, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => api_failure(console, user, namespace, &format!("change cluster {name} in {namespace}"), e),
    }
}

/// Reads the cluster for a change; the answer for the user when that fails.
async fn current(console: &Console, user: &User, namespace: &str, name: &str) -> Result<KubeDirectorCluster, Response> {
    let api = Api::<KubeDirectorCluster>::namespaced(user.client.clone(), namespace);
    api.get(name)
        .await
        .map_err(|e| api_failure(console, user, namespace, &format!("read cluster {name} in {namespace}"), e))
}

/// `POST .../members`: new member counts per role (`members.<role>`).
pub async fn members(
    State(console): State<Shared>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let user = match poster(&console, &headers, &form) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let c = match current(&console, &user, &namespace, &name).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let ids: Vec<String> = c.spec.roles.iter().map(|r| r.id.clone()).collect();
    let mut errors = FieldMessages::new();
    let mut roles = c.spec.roles.clone();
    for role in &mut roles {
        let Some(text) = field(&form, &members_field(&role.id)) else { continue };
        match text.parse::<i32>() {
            Ok(n) => role.members = Some(n),
            Err(_) => {
                errors.insert(
                    members_field(&role.id),
                    vec![format!("Members of role {} must be a whole number.", role.id)],
                );
            }
        }
    }
    if !errors.is_empty() {
        return cluster_page(&console, &user, &namespace, &name, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let body = json!({"metadata": {"resourceVersion": c.metadata.resource_version}, "spec": {"roles": roles}});
    patch(&console, &user, &namespace, &name, body, &ids).await
}

/// `POST .../choices`: new values of mutable choices (`choice.<id>`).
pub async fn choices(
    State(console): State<Shared>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let user = match poster(&console, &headers, &form) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let c = match current(&console, &user, &namespace, &name).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let chosen: BTreeMap<String, String> = form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("choice.")?.to_string(), v.trim().to_string())))
        .filter(|(id, v)| !v.is_empty() && field(&form, &choice_field(id)).is_some())
        .collect();
    let body = json!({"metadata": {"resourceVersion": c.metadata.resource_version}, "spec": {"configChoices": chosen}});
    let ids: Vec<String> = c.spec.roles.iter().map(|r| r.id.clone()).collect();
    patch(&console, &user, &namespace, &name, body, &ids).await
}

/// `POST .../upgrade`: a new `spec.app` (`app`), one the app catalog allows.
pub async fn upgrade(
    State(console): State<Shared>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let user = match poster(&console, &headers, &form) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(app) = field(&form, "app").filter(|a| !a.is_empty()) else {
        let errors = BTreeMap::from([("app".to_string(), vec!["Choose an app version to upgrade to.".to_string()])]);
        return cluster_page(&console, &user, &namespace, &name, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    let c = match current(&console, &user, &namespace, &name).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = json!({"metadata": {"resourceVersion": c.metadata.resource_version}, "spec": {"app": app}});
    patch(&console, &user, &namespace, &name, body, &[]).await
}

/// `GET .../delete`: the confirmation, saying what happens to the data.
pub async fn delete_form(
    State(console): State<Shared>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let user = match user(&console, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match current(&console, &user, &namespace, &name).await {
        Ok(c) => delete_page(&console, &user, &c, "", StatusCode::OK),
        Err(r) => r,
    }
}

fn delete_page(console: &Console, user: &User, c: &KubeDirectorCluster, error: &str, status: StatusCode) -> Response {
    let r = row(c);
    let page = DeletePage {
        chrome: user.chrome(console, &r.namespace),
        deletion: deletion_text(c),
        row: r,
        error: error.to_string(),
    };
    (status, render(&page)).into_response()
}

/// `POST .../delete`: deletes the cluster when the user typed its name to confirm.
pub async fn delete(
    State(console): State<Shared>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let user = match poster(&console, &headers, &form) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let c = match current(&console, &user, &namespace, &name).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if field(&form, "confirm") != Some(name.as_str()) {
        let error = format!("Type the cluster's name ({name}) to confirm.");
        return delete_page(&console, &user, &c, &error, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let api = Api::<KubeDirectorCluster>::namespaced(user.client.clone(), &namespace);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Redirect::to(&format!("/clusters?namespace={namespace}")).into_response(),
        Err(e) => api_failure(&console, &user, &namespace, &format!("delete cluster {name} in {namespace}"), e),
    }
}
