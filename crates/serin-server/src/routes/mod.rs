//! One module per area; each exposes a `router()` that documents its routes.

pub mod approvals;
pub mod audit;
pub mod bundles;
pub mod decisions;
pub mod effects;
pub mod live;
pub mod ofrep;
pub mod outcomes;
pub mod readiness;
pub mod releases;
pub mod sdks;
pub mod system;
pub mod tokens;
pub mod traces;
