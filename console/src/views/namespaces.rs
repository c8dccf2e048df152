//! The namespaces the launch form offers: where the user may create clusters. The
//! candidates are the namespaces the user may list or, when listing namespaces is refused
//! (typical for a namespaced end user), their own namespace plus those of the clusters they
//! can see; each candidate is then checked with a `SelfSubjectAccessReview` (see
//! `web::pages`), and the form falls back to free text when none is allowed.

/// At most this many namespaces are checked (one review each) per form.
pub const MAX_CHECKED: usize = 100;

/// The namespaces to check, sorted and without repeats: `listed` when the user may list
/// namespaces, else `home` and the namespaces of the clusters the user sees (`seen`).
/// Capped at [`MAX_CHECKED`], `home` first so the user's own is never cut.
pub fn candidates(listed: Option<Vec<String>>, home: &str, seen: &[String]) -> Vec<String> {
    let mut all: Vec<String> = match listed {
        Some(names) => names,
        None => std::iter::once(home.to_string()).chain(seen.iter().cloned()).collect(),
    };
    all.retain(|n| !n.trim().is_empty());
    all.sort();
    all.dedup();
    if all.len() > MAX_CHECKED {
        let own = all.iter().position(|n| n == home).map(|i| all.remove(i));
        all.truncate(MAX_CHECKED - usize::from(own.is_some()));
        all.extend(own);
        all.sort();
    }
    all
}

/// The namespace the form starts with: `wanted` when offered (or when nothing is offered:
/// typed), else the first offered.
pub fn preselect(offered: &[String], wanted: &str) -> String {
    if offered.is_empty() || offered.iter().any(|n| n == wanted) { wanted.to_string() } else { offered[0].clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_user_who_may_list_namespaces_has_each_checked() {
        let listed = Some(names(&["team-b", "kube-system", "team-a", ""]));
        assert_eq!(candidates(listed, "default", &names(&["elsewhere"])), names(&["kube-system", "team-a", "team-b"]));
    }

    #[test]
    fn a_namespaced_user_is_offered_their_own_and_where_their_clusters_are() {
        let seen = names(&["team-c", "team-a", "team-c"]);
        assert_eq!(candidates(None, "team-a", &seen), names(&["team-a", "team-c"]));
        assert_eq!(candidates(None, "team-a", &[]), names(&["team-a"]));
    }

    #[test]
    fn many_namespaces_are_capped_keeping_the_user_s_own() {
        let listed: Vec<String> = (0..300).map(|i| format!("ns-{i:03}")).collect();
        let got = candidates(Some(listed), "ns-250", &[]);
        assert_eq!(got.len(), MAX_CHECKED);
        assert!(got.contains(&"ns-250".to_string()));
        assert_eq!(got[0], "ns-000");
    }

    #[test]
    fn the_form_starts_in_an_offered_namespace() {
        let offered = names(&["team-a", "team-b"]);
        assert_eq!(preselect(&offered, "team-b"), "team-b");
        assert_eq!(preselect(&offered, "default"), "team-a", "the user's guess is not allowed: the first offered");
        assert_eq!(preselect(&[], "default"), "default", "nothing found: the typed default stays");
    }
}
