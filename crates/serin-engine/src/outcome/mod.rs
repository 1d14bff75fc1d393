//! Outcome telemetry: what agents report per request, or per window of requests.

mod model;
mod window;

pub use model::*;
pub use window::*;
