//! Signed tree heads: an Ed25519 signature over the audit tree's size and root.
//!
//! The signed message is the UTF-8 text, every line ending in `\n`:
//!
//! ```text
//! serin-audit-tree-head-v1
//! tree_size <decimal>
//! root_hash <64 lowercase hex>
//! timestamp_ms <decimal, may be negative>
//! ```
//!
//! so `openssl pkeyutl -verify -rawin` can check a head without Serin. The key is a 32-byte
//! Ed25519 seed; its `key_id` is `hex(sha256(public key))`.

use std::fmt;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::merkle::{Hash, Subtree, root_from_subtrees};

/// First line of the signed message; a new layout gets a new version.
pub const HEAD_DOMAIN: &str = "serin-audit-tree-head-v1";

/// Why a key or a head cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("{what} must be {len} bytes as hex")]
    BadHex { what: &'static str, len: usize },
    #[error("the signing key is not a valid Ed25519 seed")]
    BadKey,
    #[error("key_id {key_id} is not the sha256 of public_key")]
    KeyIdMismatch { key_id: String },
    #[error("the head is signed by key {got}, not by the pinned key {expected}")]
    NotPinnedKey { expected: String, got: String },
    #[error("the head's signature does not verify (its size, root or timestamp was changed)")]
    BadSignature,
}

/// The message a head's signature covers.
pub fn signing_bytes(tree_size: u64, root: &Hash, timestamp_ms: i64) -> Vec<u8> {
    format!(
        "{HEAD_DOMAIN}\ntree_size {tree_size}\nroot_hash {}\ntimestamp_ms {timestamp_ms}\n",
        hex::encode(root)
    )
    .into_bytes()
}

/// `hex(sha256(public_key))`.
pub fn key_id(public_key: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(public_key))
}

fn hex_array<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], HeadError> {
    let bad = HeadError::BadHex { what, len: N };
    let bytes = hex::decode(text.trim()).map_err(|_| bad.clone())?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| bad)
}

/// A public key given as 64 hex characters (surrounding whitespace ignored).
pub fn parse_public_key(text: &str) -> Result<[u8; 32], HeadError> {
    hex_array(text, "public_key")
}

/// The audit signing key. Its seed never leaves this value (Debug shows the key id only).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: [u8; 32],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn from_seed(seed: &[u8; 32]) -> Result<SigningKey, HeadError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| HeadError::BadKey)?;
        let public =
            <[u8; 32]>::try_from(pair.public_key().as_ref()).map_err(|_| HeadError::BadKey)?;
        Ok(SigningKey { pair, public })
    }

    /// A key file holds the seed as 64 hex characters (surrounding whitespace ignored).
    pub fn from_key_file(text: &str) -> Result<SigningKey, HeadError> {
        SigningKey::from_seed(&hex_array(text, "the key file's seed")?)
    }

    /// The text of a key file for `seed`.
    pub fn key_file_text(seed: &[u8; 32]) -> String {
        format!("{}\n", hex::encode(seed))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    pub fn key_id(&self) -> String {
        key_id(&self.public)
    }

    /// Signs the head of the tree of `tree_size` leaves with `root`, carrying `subtrees` (see
    /// [`super::merkle::subtrees`]) so a verifier can later name where the log changed.
    pub fn sign(
        &self,
        tree_size: u64,
        root: &Hash,
        timestamp_ms: i64,
        subtrees: &[Subtree],
    ) -> SignedHead {
        let sig = self
            .pair
            .sign(&signing_bytes(tree_size, root, timestamp_ms));
        SignedHead {
            tree_size,
            root_hash: hex::encode(root),
            timestamp_ms,
            key_id: self.key_id(),
            public_key: hex::encode(self.public),
            signature: hex::encode(sig.as_ref()),
            subtrees: subtrees.iter().map(SubtreeJson::from).collect(),
        }
    }
}

/// A signed tree head as printed by `serin audit head` and served at `/v1/audit/head`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    pub tree_size: u64,
    /// Hex of the RFC 9162 Merkle tree hash over the first `tree_size` audit entries.
    pub root_hash: String,
    pub timestamp_ms: i64,
    /// `hex(sha256(public_key))`.
    pub key_id: String,
    /// The Ed25519 public key, hex.
    pub public_key: String,
    /// Ed25519 signature of [`signing_bytes`], hex.
    pub signature: String,
    /// Not signed: nodes of the tree that hash up to `root_hash`, so they are only trusted
    /// when they do.
    #[serde(default)]
    pub subtrees: Vec<SubtreeJson>,
}

/// A [`Subtree`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubtreeJson {
    pub start: u64,
    pub size: u64,
    pub hash: String,
}

impl From<&Subtree> for SubtreeJson {
    fn from(s: &Subtree) -> SubtreeJson {
        SubtreeJson {
            start: s.start,
            size: s.size,
            hash: hex::encode(s.hash),
        }
    }
}

impl SubtreeJson {
    pub fn parse(&self) -> Result<Subtree, HeadError> {
        Ok(Subtree {
            start: self.start,
            size: self.size,
            hash: hex_array(&self.hash, "a subtree hash")?,
        })
    }
}

/// A head whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedHead {
    pub tree_size: u64,
    pub root: Hash,
    pub timestamp_ms: i64,
    pub public_key: [u8; 32],
    /// The carried subtrees when they hash up to the signed root; None otherwise.
    pub subtrees: Option<Vec<Subtree>>,
}

impl SignedHead {
    /// Checks the signature, against `pinned` when given, else against the key the head names.
    pub fn verify(&self, pinned: Option<&[u8; 32]>) -> Result<VerifiedHead, HeadError> {
        let public_key: [u8; 32] = hex_array(&self.public_key, "public_key")?;
        if key_id(&public_key) != self.key_id.trim().to_ascii_lowercase() {
            return Err(HeadError::KeyIdMismatch {
                key_id: self.key_id.clone(),
            });
        }
        if let Some(pinned) = pinned
            && *pinned != public_key
        {
            return Err(HeadError::NotPinnedKey {
                expected: key_id(pinned),
                got: key_id(&public_key),
            });
        }
        let root: Hash = hex_array(&self.root_hash, "root_hash")?;
        let signature: [u8; 64] = hex_array(&self.signature, "signature")?;
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(
                &signing_bytes(self.tree_size, &root, self.timestamp_ms),
                &signature,
            )
            .map_err(|_| HeadError::BadSignature)?;
        let subtrees = self
            .subtrees
            .iter()
            .map(SubtreeJson::parse)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|pieces| root_from_subtrees(self.tree_size, pieces) == Some(root));
        Ok(VerifiedHead {
            tree_size: self.tree_size,
            root,
            timestamp_ms: self.timestamp_ms,
            public_key,
            subtrees,
        })
    }
}
