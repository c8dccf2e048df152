//! The console's metrics (`kdfed_console_*`): requests by route and status class, their
//! latency, sign-ins and failed sign-ins by reason. Labels are bounded: the route is the
//! router's pattern (`/clusters/{namespace}/{name}`), never a path with names in it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A request's route pattern and status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern (or `other` for unmatched paths).
    pub route: String,
    /// `2xx`, `3xx`, `4xx`, `5xx`.
    pub code: String,
}

/// A route pattern.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route pattern.
    pub route: String,
}

/// Why a sign-in failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    /// `rejected` (the hub's API server did not accept the token), `unreachable` (it did
    /// not answer), `empty` (no token given).
    pub reason: String,
}

/// The console's metrics.
#[derive(Debug)]
pub struct ConsoleMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    sign_ins: Counter,
    sign_in_failures: Family<FailureLabel, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl ConsoleMetrics {
    /// Registers every metric under `kdfed_console_` in `registry` (the root, prefixed `kdfed`).
    pub fn register(registry: &mut Registry) -> std::sync::Arc<ConsoleMetrics> {
        let m = ConsoleMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            sign_ins: Counter::default(),
            sign_in_failures: Family::default(),
        };
        for reason in ["rejected", "unreachable", "empty"] {
            let _ = m.sign_in_failures.get_or_create(&FailureLabel { reason: reason.into() });
        }
        let sub = registry.sub_registry_with_prefix("console");
        sub.register("http_requests", "Console HTTP requests by route and status class", m.requests.clone());
        sub.register_with_unit(
            "http_request_duration",
            "Console HTTP request latency by route",
            Unit::Seconds,
            m.duration.clone(),
        );
        sub.register("sign_ins", "Successful sign-ins", m.sign_ins.clone());
        sub.register("sign_in_failures", "Failed sign-ins by reason", m.sign_in_failures.clone());
        std::sync::Arc::new(m)
    }

    /// Counts one answered request.
    pub fn record(&self, route: &str, status: u16, seconds: f64) {
        let code = format!("{}xx", status / 100);
        self.requests.get_or_create(&RequestLabels { route: route.to_string(), code }).inc();
        self.duration.get_or_create(&RouteLabel { route: route.to_string() }).observe(seconds);
    }

    /// Counts a sign-in.
    pub fn sign_in(&self) {
        self.sign_ins.inc();
    }

    /// Counts a failed sign-in.
    pub fn sign_in_failed(&self, reason: &'static str) {
        self.sign_in_failures.get_or_create(&FailureLabel { reason: reason.into() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_sign_ins_and_failures_are_exported_with_bounded_labels() {
        let mut registry = Registry::with_prefix("kdfed");
        let m = ConsoleMetrics::register(&mut registry);
        m.record("/clusters/{namespace}/{name}", 200, 0.01);
        m.record("/clusters/{namespace}/{name}", 404, 0.01);
        m.sign_in();
        m.sign_in_failed("rejected");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "kdfed_console_http_requests_total{route=\"/clusters/{namespace}/{name}\",code=\"2xx\"} 1",
            "kdfed_console_http_requests_total{route=\"/clusters/{namespace}/{name}\",code=\"4xx\"} 1",
            "kdfed_console_http_request_duration_seconds_count{route=\"/clusters/{namespace}/{name}\"} 2",
            "kdfed_console_sign_ins_total 1",
            "kdfed_console_sign_in_failures_total{reason=\"rejected\"} 1",
            "kdfed_console_sign_in_failures_total{reason=\"unreachable\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
