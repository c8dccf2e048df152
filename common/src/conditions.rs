//! Kubernetes-style conditions, keeping transition times when the status is unchanged.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// `conditions` with `type_` set; the transition time changes only with the status.
pub fn set_condition(
    conditions: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = conditions.iter().filter(|c| c.type_ != type_).cloned().collect();
    let last_transition_time = match conditions.iter().find(|c| c.type_ == type_) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => Time(jiff::Timestamp::now()),
    };
    out.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time,
        observed_generation: generation,
    });
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The condition of a type, if present.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `message` cut to at most `max` bytes (on a character boundary) with `…` appended when
/// cut: condition messages and reports stay bounded whatever an API server said.
pub fn capped(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// Longest condition message a cluster's [`summary`] shows.
pub const SUMMARY_MESSAGE: usize = 100;

/// What `kdfed cluster list` and the console say about a cluster's conditions: `Ready` when
/// it is, else the first condition that is not well (in the order a cluster gets them:
/// `Valid`, `Placed`, `MemberAvailable`, `Applied`, `Ready`; `Deleting` first while it goes)
/// as `Type=Status Reason: message`, the message cut to [`SUMMARY_MESSAGE`] characters; `-`
/// without conditions.
pub fn summary(conditions: &[Condition]) -> String {
    let not_well = |type_: &str| {
        condition(conditions, type_)
            .filter(|c| if type_ == "Deleting" { c.status == "True" } else { c.status != "True" })
    };
    let Some(c) = ["Deleting", "Valid", "Placed", "MemberAvailable", "Applied", "Ready"].into_iter().find_map(not_well)
    else {
        return if condition(conditions, "Ready").is_some() { "Ready".into() } else { "-".into() };
    };
    let mut message: String = c.message.chars().take(SUMMARY_MESSAGE).collect();
    if c.message.chars().count() > SUMMARY_MESSAGE {
        message.push('…');
    }
    format!("{}={} {}: {message}", c.type_, c.status, c.reason)
}
