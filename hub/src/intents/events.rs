//! Events rate-limited: an intent gets at most one Event of a reason with the same message
//! per [`QUIET`]. A retry loop (a blocked failover, an unreadable secret key) or a storm of
//! member changes then costs the API server one Event per minute, not one per pass.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an Event of one reason and message on one intent keeps others like it back.
pub const QUIET: Duration = Duration::from_secs(60);

/// When each (intent, reason, message) last got an Event.
#[derive(Debug, Default)]
pub struct EventGate {
    last: HashMap<(String, String, String), Instant>,
}

impl EventGate {
    /// Whether an Event of `reason` saying `message` on the intent `key` may go out at `now`
    /// (then it counts as sent).
    pub fn allow(&mut self, key: &str, reason: &str, message: &str, now: Instant) -> bool {
        // Forget what no longer holds anything back, so the map stays as small as the storm.
        if self.last.len() > 1024 {
            self.last.retain(|_, at| now.duration_since(*at) < QUIET);
        }
        let k = (key.to_string(), reason.to_string(), message.to_string());
        match self.last.get(&k) {
            Some(at) if now.duration_since(*at) < QUIET => false,
            _ => {
                self.last.insert(k, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_event_goes_out_once_a_minute_and_a_new_one_at_once() {
        let mut gate = EventGate::default();
        let t0 = Instant::now();
        assert!(gate.allow("team/db", "FailoverBlocked", "no member fits", t0));
        assert!(!gate.allow("team/db", "FailoverBlocked", "no member fits", t0 + Duration::from_secs(10)));
        assert!(gate.allow("team/db", "FailoverBlocked", "0/3 members fit", t0 + Duration::from_secs(10)));
        assert!(gate.allow("team/web", "FailoverBlocked", "no member fits", t0 + Duration::from_secs(10)));
        assert!(gate.allow("team/db", "FailoverBlocked", "no member fits", t0 + QUIET));
    }
}
