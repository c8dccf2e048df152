//! Validate (pure): the intent's spec resolved against its app (`kdfed_crds::resolve`:
//! defaults and validation together), and the `Valid` condition that says how it went.

use std::time::Duration;

use kdfed_common::conditions::set_condition;
use kdfed_crds::Resolved;
use kdfed_crds::app::KubeDirectorApp;
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus};
use kube::runtime::controller::Action;

use super::{Event, Settle};

/// How often a cluster whose app is missing looks again (an app is not watched).
pub const APP_RECHECK: Duration = Duration::from_secs(30);

/// The resolved spec and `status` with `Valid=True`; or (boxed: it is rare and large), for a missing app or an invalid
/// spec, the status with `Valid=False` and the Event to send. The Work's spec names the
/// app's catalog as `local`: the member holds its frozen copy of the app beside it.
pub fn validate(
    intent: &KubeDirectorCluster,
    app: Option<&(KubeDirectorApp, String)>,
    status: &KubeDirectorClusterStatus,
) -> Result<(Resolved, KubeDirectorClusterStatus), Box<Settle>> {
    let generation = intent.metadata.generation;
    let mut status = status.clone();
    let Some((app, catalog)) = app else {
        let message = format!("Invalid app({}). This app resource ID has not been registered.", intent.spec.app);
        status.conditions = set_condition(&status.conditions, "Valid", "False", "AppNotFound", &message, generation);
        let event = Event::new(true, "Invalid", format!("spec.app: {message}"));
        return Err(Box::new(Settle { status, event, then: Action::requeue(APP_RECHECK) }));
    };
    let mut wanted = intent.spec.clone();
    wanted.app_catalog = Some("local".to_string());
    match kdfed_crds::resolve(&app.spec, &wanted, None) {
        Ok(resolved) => {
            let message = format!("app found in the {catalog} catalog");
            status.conditions = set_condition(&status.conditions, "Valid", "True", "Valid", &message, generation);
            Ok((resolved, status))
        }
        Err(errors) => {
            let message = errors.to_string();
            status.conditions =
                set_condition(&status.conditions, "Valid", "False", "InvalidSpec", &message, generation);
            // A spec that does not validate waits for the user to change it.
            Err(Box::new(Settle { status, event: Event::new(true, "Invalid", message), then: Action::await_change() }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intents::fixtures::{app, intent, web_intent};
    use kdfed_common::conditions::condition;

    fn valid(status: &KubeDirectorClusterStatus) -> Option<(&str, &str)> {
        condition(&status.conditions, "Valid").map(|c| (c.status.as_str(), c.reason.as_str()))
    }

    #[test]
    fn a_cluster_of_an_unregistered_app_is_invalid_and_looks_again_later() {
        let db = intent("db", None, &[]);
        let invalid = validate(&db, None, &KubeDirectorClusterStatus::default()).expect_err("no app");
        assert_eq!(valid(&invalid.status), Some(("False", "AppNotFound")));
        assert_eq!(invalid.event.reason, "Invalid");
        assert!(invalid.event.message.starts_with("spec.app: Invalid app(a)."), "{}", invalid.event.message);
        assert_eq!(invalid.then, Action::requeue(APP_RECHECK));
    }

    #[test]
    fn a_valid_cluster_is_resolved_against_the_local_copy_of_its_app() {
        let db = web_intent("db", 1, "1");
        let (resolved, status) = validate(&db, Some(&(app(), "system".into())), &Default::default()).expect("valid");
        assert_eq!(resolved.cluster.app_catalog.as_deref(), Some("local"));
        assert_eq!(valid(&status), Some(("True", "Valid")));
        let message = condition(&status.conditions, "Valid").map(|c| c.message.clone());
        assert_eq!(message.as_deref(), Some("app found in the system catalog"));
    }

    #[test]
    fn an_invalid_spec_waits_for_a_change() {
        let mut db = intent("db", None, &[]);
        db.spec.roles = vec![serde_json::from_value(serde_json::json!({"id": "nosuchrole"})).expect("role")];
        let invalid = validate(&db, Some(&(app(), "local".into())), &Default::default()).expect_err("bad role");
        assert_eq!(valid(&invalid.status), Some(("False", "InvalidSpec")));
        assert_eq!(invalid.then, Action::await_change());
        assert!(invalid.event.warning);
    }
}
