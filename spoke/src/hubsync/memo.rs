//! What Work sync remembers between passes, so that a pass with nothing new costs the hub
//! nothing and the member's API server one read.
//!
//! A Work's content is named by its generation and the digest the hub annotates it with
//! ([`ANNOTATION_DESIRED_DIGEST`]: the spec, labels, finalizers and the secret material
//! beside it). Once a pass applied everything a Work asks for, the next passes with the same
//! name only read the local copy and report its status, until the copy's spec changes under
//! us (its generation moves), the copy is fenced, gone or being deleted, or [`FULL_EVERY`]
//! passed (then everything is applied again, repairing drift of the namespace, app, Secrets
//! and ConfigMaps). The Work's secret material is read from the hub once per name too.
//! Without the hub's digest annotation every pass applies everything, as before.
//!
//! At 1,000 members with ten clusters each, a resync that applied everything and read the
//! Work and its Secret from the hub was 20,000 hub reads a minute at rest (docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::{ANNOTATION_DESIRED_DIGEST, ANNOTATION_FENCED, KubeDirectorWork};
use kube::ResourceExt;

use super::keys::Material;

/// How often a Work whose content did not change is applied in full again.
pub const FULL_EVERY: Duration = Duration::from_secs(30 * 60);

/// What one complete pass applied for a Work.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The Work's content name ([`content_name`]).
    pub content: String,
    /// The local copy's generation right after it was applied.
    pub copy_generation: Option<i64>,
    /// When.
    pub at: Instant,
}

/// The name of a Work's content: its generation and the hub's digest, or `None` when the
/// Work carries no digest (then nothing is skipped).
pub fn content_name(work: &KubeDirectorWork) -> Option<String> {
    let digest = work.annotations().get(ANNOTATION_DESIRED_DIGEST)?;
    Some(format!("{}/{digest}", work.metadata.generation.unwrap_or_default()))
}

/// Whether a pass over `work` may only report the status of `copy` (as stored now): the
/// last complete pass applied this content, the copy's spec is as that pass left it, the
/// copy is neither fenced nor being deleted, and the full re-apply is not due.
pub fn only_report(
    last: Option<&Applied>,
    work: &KubeDirectorWork,
    copy: Option<&KubeDirectorCluster>,
    now: Instant,
) -> bool {
    let (Some(last), Some(content), Some(copy)) = (last, content_name(work), copy) else {
        return false;
    };
    last.content == content
        && last.copy_generation.is_some()
        && copy.metadata.generation == last.copy_generation
        && copy.metadata.deletion_timestamp.is_none()
        && !copy.annotations().contains_key(ANNOTATION_FENCED)
        && now.saturating_duration_since(last.at) < FULL_EVERY
}

/// Work sync's memory, per Work name (in this member's namespace).
#[derive(Default)]
pub struct Memo {
    applied: Mutex<HashMap<String, Applied>>,
    material: Mutex<HashMap<String, (String, Material)>>,
}

impl Memo {
    /// What the last complete pass over `work` applied.
    pub fn applied(&self, work: &str) -> Option<Applied> {
        self.applied.lock().ok()?.get(work).cloned()
    }

    /// Records a complete pass (everything the Work asks for applied, nothing held back),
    /// or forgets the last one when `applied` is `None`.
    pub fn set_applied(&self, work: &str, applied: Option<Applied>) {
        if let Ok(mut map) = self.applied.lock() {
            match applied {
                Some(a) => map.insert(work.to_string(), a),
                None => map.remove(work),
            };
        }
    }

    /// The secret material read for `work` with this content, if any.
    pub fn material(&self, work: &KubeDirectorWork) -> Option<Material> {
        let content = content_name(work)?;
        let map = self.material.lock().ok()?;
        map.get(&work.name_any()).filter(|(c, _)| *c == content).map(|(_, m)| m.clone())
    }

    /// Keeps the secret material read for `work` (only when the Work names its content).
    pub fn keep_material(&self, work: &KubeDirectorWork, material: &Material) {
        let Some(content) = content_name(work) else { return };
        if let Ok(mut map) = self.material.lock() {
            map.insert(work.name_any(), (content, material.clone()));
        }
    }

    /// Forgets a released Work.
    pub fn forget(&self, work: &str) {
        self.set_applied(work, None);
        if let Ok(mut map) = self.material.lock() {
            map.remove(work);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(generation: i64, digest: Option<&str>) -> KubeDirectorWork {
        let mut w = KubeDirectorWork::new("w", Default::default());
        w.metadata.generation = Some(generation);
        if let Some(d) = digest {
            w.annotations_mut().insert(ANNOTATION_DESIRED_DIGEST.into(), d.into());
        }
        w
    }

    fn copy(generation: i64) -> KubeDirectorCluster {
        let mut c = KubeDirectorCluster::new("db", Default::default());
        c.metadata.generation = Some(generation);
        c
    }

    #[test]
    fn only_a_pass_over_the_same_content_and_an_untouched_copy_just_reports() {
        let now = Instant::now();
        let w = work(3, Some("abc"));
        let last = Applied { content: content_name(&w).expect("named"), copy_generation: Some(2), at: now };
        assert!(only_report(Some(&last), &w, Some(&copy(2)), now + Duration::from_secs(60)));
        assert!(!only_report(None, &w, Some(&copy(2)), now), "nothing applied yet");
        assert!(!only_report(Some(&last), &w, None, now), "the copy is gone");
        assert!(!only_report(Some(&last), &w, Some(&copy(3)), now), "someone changed the copy's spec");
        assert!(!only_report(Some(&last), &work(4, Some("abc")), Some(&copy(2)), now), "a new generation");
        assert!(!only_report(Some(&last), &work(3, Some("abd")), Some(&copy(2)), now), "new secret material");
        assert!(!only_report(Some(&last), &work(3, None), Some(&copy(2)), now), "no digest: apply everything");
        assert!(!only_report(Some(&last), &w, Some(&copy(2)), now + FULL_EVERY), "the full re-apply is due");
        let mut fenced = copy(2);
        fenced.annotations_mut().insert(ANNOTATION_FENCED.into(), "true".into());
        assert!(!only_report(Some(&last), &w, Some(&fenced), now), "a fenced copy is re-applied (lifts the fence)");
    }

    #[test]
    fn material_is_kept_per_content_and_forgotten_with_the_work() {
        let memo = Memo::default();
        let w = work(1, Some("abc"));
        let m = Material { secrets: [("s".to_string(), Default::default())].into(), ..Material::default() };
        memo.keep_material(&w, &m);
        assert_eq!(memo.material(&w), Some(m.clone()));
        assert_eq!(memo.material(&work(1, Some("abd"))), None, "other content");
        memo.keep_material(&work(1, None), &m);
        memo.forget("w");
        assert_eq!(memo.material(&w), None);
        assert_eq!(memo.applied("w"), None);
    }
}
