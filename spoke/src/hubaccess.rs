//! Whether the hub accepts this member's credentials, shared by hub sync's loops. A 401
//! from the hub means the member was removed (`kdfed member remove`) or its token expired
//! while the spoke was down: the spoke says so once, loudly, and its loops back off (up to
//! [`MAX_PAUSE`]) instead of logging a warning every few seconds forever. The first call
//! the hub accepts again (the member was re-registered and the spoke given its new
//! kubeconfig) ends that, also said once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{error, info};

/// Longest pause between attempts while the hub refuses the credentials.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);

/// Whether `error` is the hub refusing the credentials (401).
pub fn is_refusal(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(e) if e.code == 401)
}

/// Whether an error's text says the credentials were refused (for errors that only carry
/// text, e.g. a watch failure inside the controller runtime).
pub fn text_is_refusal(text: &str) -> bool {
    text.contains("401") || text.contains("Unauthorized")
}

/// The shared state.
#[derive(Debug, Default)]
pub struct HubAccess {
    /// Since when, and how many refusals in a row.
    refused: Mutex<Option<(Instant, u32)>>,
}

impl HubAccess {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, u32)>> {
        self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a refusal by `what` (a loop's name); the first one is logged as an error.
    pub fn refused(&self, member: &str, what: &str) {
        let mut refused = self.lock();
        match refused.as_mut() {
            Some((_, n)) => *n = n.saturating_add(1),
            None => {
                error!(
                    member,
                    "the hub refuses this member's credentials ({what}: 401 Unauthorized): the member was removed from the hub, or its token expired while the spoke was down. Local clusters keep running; hub sync backs off. Re-register it (`kdfed member add {member}`) and give the spoke the new kubeconfig"
                );
                *refused = Some((Instant::now(), 1));
            }
        }
    }

    /// Records a call the hub accepted; the end of a refusal is logged once.
    pub fn accepted(&self) {
        let mut refused = self.lock();
        if let Some((since, _)) = refused.take() {
            info!(
                "the hub accepts this member's credentials again (refused for {:.0}s)",
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// Whether the hub currently refuses the credentials.
    pub fn is_refused(&self) -> bool {
        self.lock().is_some()
    }

    /// How long a loop whose normal period is `normal` waits before its next attempt.
    pub fn pause(&self, normal: Duration) -> Duration {
        match *self.lock() {
            None => normal,
            Some((_, n)) => backoff(normal, n),
        }
    }
}

/// `normal` doubled per refusal after the first, up to [`MAX_PAUSE`].
pub fn backoff(normal: Duration, refusals: u32) -> Duration {
    let factor = 1u32 << refusals.saturating_sub(1).min(16);
    normal.saturating_mul(factor).min(MAX_PAUSE).max(normal.min(MAX_PAUSE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_back_off_to_five_minutes_and_end_on_the_first_acceptance() {
        let access = HubAccess::default();
        let normal = Duration::from_secs(2);
        assert_eq!(access.pause(normal), normal);
        access.refused("east", "heartbeat");
        assert!(access.is_refused());
        assert_eq!(access.pause(normal), normal);
        access.refused("east", "heartbeat");
        assert_eq!(access.pause(normal), Duration::from_secs(4));
        for _ in 0..20 {
            access.refused("east", "report");
        }
        assert_eq!(access.pause(normal), MAX_PAUSE);
        access.accepted();
        assert!(!access.is_refused());
        assert_eq!(access.pause(normal), normal);
    }

    #[test]
    fn only_401_is_a_refusal() {
        let status = |code| kube::Error::Api(kube::core::Status::failure("x", "y").with_code(code).boxed());
        assert!(is_refusal(&status(401)));
        assert!(!is_refusal(&status(403)));
        assert!(!is_refusal(&status(500)));
    }
}
