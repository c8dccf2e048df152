//! The director: KubeDirector semantics on one cluster. It reconciles
//! `KubeDirectorCluster` objects on its own API server into a headless Service, one
//! StatefulSet per role, a Service per member and PVCs, and tracks every member's state.
//!
//! Each reconcile: dereference (app, config) → validate → plan (pure, `members::plan`) →
//! apply (server-side apply, deletes) → write status → record Events.

pub mod build;
pub mod configmeta;
pub mod connections;
pub mod members;
pub mod names;
mod reconcile;
pub mod render;
pub mod setup;

pub use reconcile::{Context, run};
