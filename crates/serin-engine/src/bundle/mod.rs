//! The bundle as a decision serves it: the parsed, canonical form and its digest. Reading and
//! validating a bundle directory lives in `serin-core`.

#[doc(hidden)]
pub mod json;
mod model;

pub use model::{
    Bundle, BundleDecodeError, Capability, Digest, DigestParseError, EffectClass, Example, Message,
    MessageRole, Metadata, ModelSpec, Tool, ToolCall,
};
#[doc(hidden)]
pub use model::{capability_value, example_value, normalize_newlines, tool_value};
