//! Admission for kdfed's kinds, as steps:
//!
//! - [`settings`]: the `webhook.*` settings and flags, and start-up (serve, then register);
//! - [`tls`]: rustls with a certificate re-read when its files change, so it rotates
//!   without a restart;
//! - [`server`]: the HTTPS server routing `/validate` and `/mutate` to the review services
//!   and counting every answer;
//! - [`review`]: each request read as its kind and decided by that kind's `Validate` (or
//!   `Mutate`) implementation, behind a `tower::Service` over typed `AdmissionReview`s;
//!   refusals are typed field errors naming field and rule;
//! - [`mutation`]: secret-key encryption and generated master keys;
//! - [`registration`]: the webhook configurations (typed) and their server-side apply.

pub mod mutation;
pub mod registration;
pub mod review;
pub mod server;
pub mod settings;
pub mod tls;

pub use mutation::LAST_APPLIED;
pub use registration::{Endpoint, FENCE_WATCHDOG_USER, configuration_name, register};
pub use review::{Refusal, Reviewer, own_user};
pub use server::{MUTATE_PATH, PATH, ServeError, serve};
pub use settings::{WebhookArgs, WebhookError, WebhookSettings};
