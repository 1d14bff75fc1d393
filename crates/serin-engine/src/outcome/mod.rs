//! Outcome telemetry: what agents report per request.

mod model;

pub use model::*;
