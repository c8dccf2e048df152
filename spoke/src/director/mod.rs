//! The director: KubeDirector semantics on one cluster. It reconciles
//! `KubeDirectorCluster` objects on its own API server into a headless Service, one
//! StatefulSet per role, a Service per member and PVCs, and tracks every member's state.
//!
//! Each reconcile (`reconcile`) is a list of named steps: dereference (the app, the
//! config, pods, StatefulSets, claims and connected objects, each read once; [`dereference`]) →
//! connections (record the hash; [`connections`]) → validate (`kdfed_crds::resolve`) →
//! setup (exec into members being set up; [`lifecycle`]) → plan (pure: members, roles,
//! tokens, notifications, stray claims and the object changes; [`plan`], [`members`],
//! [`claims`]) → apply
//! (server-side apply, deletes; [`apply`], builders in [`build`]) → notify (exec;
//! [`lifecycle`]) → status (conditions, the one write, Events; [`status`]).

pub mod apply;
pub mod build;
pub mod claims;
pub mod configmeta;
pub mod connections;
pub mod dereference;
pub mod lifecycle;
pub mod members;
pub mod names;
pub mod plan;
mod reconcile;
pub mod render;
pub mod rollout;
pub mod setup;
pub mod status;
pub mod upgrade;

pub use reconcile::{Context, Error, run};
