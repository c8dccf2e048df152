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
use crate::views::launch::{FieldMessages, members_field, refusal_fields};

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim())
}

/// Times a change is tried again when the cluster changed between read and patch (the
/// hub and the members write its status, which moves its resource version).
const CONFLICT_RETRIES: usize = 5;

/// Reads the cluster, builds the merge patch from what it read with `build` (carrying the
/// resource version read, so a concurrent change of the spec is never overwritten: the patch
/// is built again from a fresh read), applies it, and answers with the cluster page, or the
/// page with the refusal at the fields it names.
async fn change(
    console: &Console,
    user: &User,
    namespace: &str,
    name: &str,
    build: impl Fn(&KubeDirectorCluster) -> Value,
) -> Response {
    let api = Api::<KubeDirectorCluster>::namespaced(user.client.clone(), namespace);
    let mut attempt = 0;
    loop {
        let c = match current(console, user, namespace, name).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let mut body = build(&c);
        body["metadata"] = json!({"resourceVersion": c.metadata.resource_version});
        let roles: Vec<String> = c.spec.roles.iter().map(|r| r.id.clone()).collect();
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await {
            Ok(_) => return Redirect::to(&format!("/clusters/{namespace}/{name}")).into_response(),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < CONFLICT_RETRIES => attempt += 1,
            // Refusals that name fields: the webhook's (403 with "denied the request"), the
            // API server's validation (422, 400), a conflict that kept coming back (409).
            Err(kube::Error::Api(e))
                if e.message.contains("denied the request") || matches!(e.code, 400 | 409 | 422) =>
            {
                let errors = refusal_fields(&e.message, &roles);
                return cluster_page(console, user, namespace, name, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
            }
            Err(e) => {
                return api_failure(console, user, namespace, &format!("change cluster {name} in {namespace}"), e);
            }
        }
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
    let mut wanted = BTreeMap::new();
    let mut errors = FieldMessages::new();
    for (key, text) in &form {
        let Some(role) = key.strip_prefix("members.") else { continue };
        match text.trim().parse::<i32>() {
            Ok(n) => {
                wanted.insert(role.to_string(), n);
            }
            Err(_) => {
                errors.insert(members_field(role), vec![format!("Members of role {role} must be a whole number.")]);
            }
        }
    }
    if !errors.is_empty() {
        return cluster_page(&console, &user, &namespace, &name, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    change(&console, &user, &namespace, &name, |c| {
        let mut roles = c.spec.roles.clone();
        for role in &mut roles {
            if let Some(n) = wanted.get(&role.id) {
                role.members = Some(*n);
            }
        }
        json!({"spec": {"roles": roles}})
    })
    .await
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
    let chosen: BTreeMap<String, String> = form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("choice.")?.to_string(), v.trim().to_string())))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    change(&console, &user, &namespace, &name, |_| json!({"spec": {"configChoices": chosen}})).await
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
    change(&console, &user, &namespace, &name, |_| json!({"spec": {"app": app}})).await
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
