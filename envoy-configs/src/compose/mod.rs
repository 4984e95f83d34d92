//! The composer: a service spec ([`spec`]) becomes a sidecar bootstrap with the mesh filters wired
//! in ([`render`]), explained in plain language ([`explain`]), or served to a running sidecar as
//! file-based xDS ([`xds`]). The `mesh-bootstrap` CLI drives it.
//!
//! A filter joins with three small additions: its config type as a section of
//! [`spec::FilterSpecs`] (and a line in [`spec::FilterSpecs::sections`]), its slot(s) in
//! [`chain::CHAIN`], and its catalog entry (filters/catalog). A filter of the spec whose module
//! is not in the catalog yet is left out with a note, never rendered broken.

pub mod chain;
pub mod dashboard;
pub mod explain;
pub mod k8s;
pub mod render;
pub mod spec;
pub mod steering;
pub mod xds;
