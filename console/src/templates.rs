//! The pages' templates (askama: checked when the console is compiled, HTML-escaped). Each
//! struct is one page; `templates/base.html` holds what every page shares.

use askama::Template;

use crate::views::catalog::{AppView, RoleView};
use crate::views::cluster::{ClusterPage, ClusterRow};
use crate::views::launch::{self, FieldMessages, FormInput};
use crate::views::placement::{LabelOffer, Matching};

/// Navigation and the sign-out form; empty `user` before sign-in.
#[derive(Clone, Debug, Default)]
pub struct Chrome {
    /// Signed-in user.
    pub user: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// The namespace being looked at.
    pub namespace: String,
    /// Local mode (no sign-out).
    pub local: bool,
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "sign_in.html")]
pub struct SignInPage {
    /// Chrome (no user yet).
    pub chrome: Chrome,
    /// Why the last sign-in failed.
    pub error: String,
    /// The sign-in form's CSRF token.
    pub csrf: String,
}

/// A page that says one thing ("Not allowed", "Form refused").
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    /// Chrome.
    pub chrome: Chrome,
    /// Heading.
    pub title: String,
    /// Text.
    pub text: String,
}

/// The catalog.
#[derive(Template)]
#[template(path = "catalog.html")]
pub struct CatalogPage {
    /// Chrome.
    pub chrome: Chrome,
    /// Apps the user may read.
    pub apps: Vec<AppView>,
    /// What the user may not list.
    pub notes: Vec<String>,
}

/// The launch form of one app.
#[derive(Template)]
#[template(path = "launch.html")]
pub struct LaunchPage {
    /// Chrome.
    pub chrome: Chrome,
    /// The app.
    pub app: AppView,
    /// What the user typed (or the defaults).
    pub input: FormInput,
    /// Messages by field.
    pub errors: FieldMessages,
    /// Member labels, `None` when the user may not list member clusters.
    pub offers: Option<Vec<LabelOffer>>,
    /// Members matching the labels asked for, of those available and with room.
    pub matching: Option<Matching>,
    /// Namespaces the user may create clusters in; empty: the namespace is typed.
    pub namespaces: Vec<String>,
}

impl LaunchPage {
    /// Messages at `field`.
    pub fn errors_at(&self, field: &str) -> Vec<String> {
        self.errors.get(field).cloned().unwrap_or_default()
    }

    /// Messages at a role's field of `kind` (`members`, `cpu`, `memory`, `storage`).
    pub fn role_errors(&self, kind: &str, role: &RoleView) -> Vec<String> {
        self.errors_at(&format!("{kind}.{}", role.id))
    }

    /// What the user typed at a role's field of `kind`.
    pub fn role_value(&self, kind: &str, role: &RoleView) -> String {
        self.input.get(&format!("{kind}.{}", role.id)).to_string()
    }

    /// What the user typed at `field`.
    pub fn value(&self, field: &str) -> String {
        self.input.get(field).to_string()
    }

    /// Whether `value` is the one chosen for choice `id`.
    pub fn chosen(&self, id: &str, value: &str) -> bool {
        self.input.get(&launch::choice_field(id)) == value
    }

    /// Messages at choice `id`.
    pub fn choice_errors(&self, id: &str) -> Vec<String> {
        self.errors_at(&launch::choice_field(id))
    }

    /// How many member clusters match the labels asked for, in words.
    pub fn matching_text(&self) -> String {
        self.matching.as_ref().map(matching_text).unwrap_or_default()
    }

    /// Whether `namespace` is the one chosen.
    pub fn namespace_chosen(&self, namespace: &str) -> bool {
        self.input.get("namespace") == namespace
    }

    /// Whether member label `label` is checked.
    pub fn checked(&self, label: &str) -> bool {
        self.input.has_label(label)
    }
}

/// `2 member clusters match these labels; 1 of them available, 1 with room for this
/// cluster.` (without the room when the form does not describe a cluster yet).
pub fn matching_text(m: &Matching) -> String {
    let clusters = if m.matching == 1 { "member cluster matches" } else { "member clusters match" };
    let room = m.room.map(|r| format!(", {r} with room for this cluster")).unwrap_or_default();
    format!("{} {clusters} these labels; {} of them available{room}.", m.matching, m.available)
}

/// One Event of a cluster.
#[derive(Clone, Debug)]
pub struct EventView {
    /// When (last seen).
    pub time: String,
    /// `Normal` or `Warning`.
    pub kind: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// The cluster list.
#[derive(Template)]
#[template(path = "clusters.html")]
pub struct ClustersPage {
    /// Chrome.
    pub chrome: Chrome,
    /// Rows.
    pub rows: Vec<ClusterRow>,
}

/// A cluster's page.
#[derive(Template)]
#[template(path = "cluster.html")]
pub struct ClusterTemplate {
    /// Chrome.
    pub chrome: Chrome,
    /// The view.
    pub page: ClusterPage,
    /// Events, `None` when the user may not list them.
    pub events: Option<Vec<EventView>>,
    /// Messages of a refused change, by field.
    pub errors: FieldMessages,
}

impl ClusterTemplate {
    /// Messages at `field`.
    pub fn errors_at(&self, field: &str) -> Vec<String> {
        self.errors.get(field).cloned().unwrap_or_default()
    }

    /// Messages at a role's member count.
    pub fn member_errors(&self, role: &str) -> Vec<String> {
        self.errors_at(&launch::members_field(role))
    }

    /// Messages at choice `id`.
    pub fn choice_errors(&self, id: &str) -> Vec<String> {
        self.errors_at(&launch::choice_field(id))
    }
}

/// The deletion confirmation.
#[derive(Template)]
#[template(path = "delete.html")]
pub struct DeletePage {
    /// Chrome.
    pub chrome: Chrome,
    /// The cluster.
    pub row: ClusterRow,
    /// What happens to the data.
    pub deletion: String,
    /// Why the last attempt was refused.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::catalog::{app_view, tests::greeter};

    fn launch(input: FormInput, errors: FieldMessages, offers: Option<Vec<LabelOffer>>) -> String {
        let app = app_view(&greeter(), "kdfed-system");
        let chrome = Chrome { user: "alice".into(), csrf: "c5rf".into(), namespace: "team-a".into(), local: false };
        let matching = Some(Matching { matching: 2, available: 1, room: Some(1) });
        let namespaces = vec!["team-a".to_string(), "team-b".to_string()];
        LaunchPage { chrome, app, input, errors, offers, matching, namespaces }.render().expect("render")
    }

    /// The HTML of the field whose input has `id`, to the end of its block.
    fn field<'a>(html: &'a str, id: &str) -> &'a str {
        let at = html.find(&format!("id=\"{id}\"")).expect("field");
        &html[at..at + html[at..].find("</div>").expect("end of field")]
    }

    #[test]
    fn the_form_labels_every_field_and_shows_each_message_at_its_field() {
        let mut input = FormInput::default();
        input.fields.insert("name".into(), "<b>hello</b>".into());
        let errors = FieldMessages::from([
            ("members.worker".to_string(), vec!["count refused (rule: cardinality)".to_string()]),
            (String::new(), vec!["spec.defaultSecret: missing".to_string()]),
        ]);
        let html = launch(input, errors, None);
        assert!(field(&html, "members-worker").contains("count refused (rule: cardinality)"));
        assert!(!field(&html, "members-head").contains("count refused"));
        assert!(html.contains("spec.defaultSecret: missing"), "what names no field is shown on top");
        assert!(field(&html, "name").contains("value=\"&#60;b&#62;hello&#60;/b&#62;\""), "input kept, escaped");
        for id in [
            "name",
            "namespace",
            "members-head",
            "cpu-worker",
            "memory-worker",
            "storage-head",
            "choice-language",
            "labels",
        ] {
            assert!(html.contains(&format!("<label for=\"{id}\"")), "a label for {id}");
        }
        assert!(html.contains("name=\"csrf\" value=\"c5rf\""), "the session's CSRF token in the form");
        assert!(html.contains("not allowed to list the member clusters"), "no offers: said, free text accepted");
        assert!(!html.contains("id=\"matching\""), "no count without member clusters to count");
    }

    #[test]
    fn member_labels_are_offered_with_their_counts() {
        let offers = vec![LabelOffer { label: "region=eu".into(), members: 2, available: 1 }];
        let mut input = FormInput::default();
        input.labels.push("region=eu".into());
        let html = launch(input, FieldMessages::new(), Some(offers));
        assert!(html.contains("value=\"region=eu\" checked"), "{html}");
        assert!(html.contains("(2 members, 1 available)"));
        assert!(
            html.contains(
                ">2 member clusters match these labels; 1 of them available, 1 with room for this cluster.</p>"
            )
        );
    }

    #[test]
    fn the_namespaces_the_user_may_create_clusters_in_are_offered() {
        let mut input = FormInput::default();
        input.fields.insert("namespace".into(), "team-b".into());
        let html = launch(input, FieldMessages::new(), None);
        let block = field(&html, "namespace");
        assert!(block.starts_with("id=\"namespace\" name=\"namespace\">"), "a choice, not free text: {block}");
        assert!(block.contains("<option value=\"team-a\">team-a</option>"), "{block}");
        assert!(block.contains("<option value=\"team-b\" selected>team-b</option>"), "{block}");
        let app = app_view(&greeter(), "kdfed-system");
        let mut input = FormInput::default();
        input.fields.insert("namespace".into(), "team-a".into());
        let page = LaunchPage {
            chrome: Chrome::default(),
            app,
            input,
            errors: FieldMessages::new(),
            offers: None,
            matching: None,
            namespaces: Vec::new(),
        };
        let html = page.render().expect("render");
        assert!(field(&html, "namespace").contains("value=\"team-a\" required"), "none found: typed");
    }
}
