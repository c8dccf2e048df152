//! kdfed's API: the KubeDirector v1beta1 kinds (`KubeDirectorApp`, `KubeDirectorCluster`,
//! `KubeDirectorConfig`), kdfed's federation kinds (`KubeDirectorMember`,
//! `KubeDirectorWork`), their defaulting and validation as pure functions (one [`resolve()`]
//! step for consumers of a cluster spec; [`validate::member`] for members), typed field
//! errors ([`FieldError`]), the label keys the kinds share, the CRD generation, and
//! conversion from the older v1alpha1 format.

pub mod app;
pub mod choices;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod crdgen;
pub mod defaults;
pub mod federation;
pub mod nulls;
pub mod quantity;
pub mod resolve;
mod schema;
pub mod upgrade;
pub mod validate;

pub use app::{KubeDirectorApp, KubeDirectorAppSpec};
pub use cluster::{KubeDirectorCluster, KubeDirectorClusterSpec, KubeDirectorClusterStatus};
pub use config::{KubeDirectorConfig, KubeDirectorConfigSpec};
pub use federation::{KubeDirectorMember, KubeDirectorMemberSpec, KubeDirectorWork, KubeDirectorWorkSpec};
pub use resolve::{Resolved, ResolvedRole, resolve};
pub use validate::{FieldError, ValidationErrors};

/// API group of the KubeDirector kinds.
pub const KUBEDIRECTOR_GROUP: &str = "kubedirector.hpe.com";
/// API version of the KubeDirector kinds.
pub const KUBEDIRECTOR_API_VERSION: &str = "kubedirector.hpe.com/v1beta1";
/// API version of the federation kinds.
pub const FEDERATION_API_VERSION: &str = "federation.kubedirector.hpe.com/v1alpha1";
