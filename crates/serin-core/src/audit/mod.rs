//! Tamper evidence for the audit log with an anchor outside the database.
//!
//! The store's hash chain only shows that rows agree with each other: whoever can write the
//! database can rewrite a row and every hash after it, or drop the newest rows. Here the log's
//! canonical entries are the leaves of an RFC 9162 Merkle tree ([`merkle`]) whose size and root are
//! signed with an Ed25519 key kept outside the database ([`head`]). A head saved elsewhere (a file,
//! a webhook receiver) pins the first `tree_size` entries: a consistency proof to today's head
//! fails if any of them was modified, removed, inserted or reordered, and a log shorter than the
//! head was truncated.

pub mod head;
pub mod merkle;

pub use head::{
    HEAD_DOMAIN, HeadError, SignedHead, SigningKey, SubtreeJson, VerifiedHead, key_id,
    parse_public_key, signing_bytes,
};
pub use merkle::{Hash, Subtree};
