//! View models: pure functions from Kubernetes objects (and form input) to what the pages
//! show, unit-tested without a server. The templates only lay them out.

pub mod catalog;
pub mod cluster;
pub mod launch;
pub mod namespaces;
pub mod placement;
