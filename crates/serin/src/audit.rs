//! `serin audit head` and `serin audit verify --head`: the audit log checked against a signed
//! tree head kept outside the server.
//!
//! Nothing here trusts the server's word: the saved head's signature, the fresh head's signature
//! (same key) and the consistency proof between them are all checked locally with
//! `serin_core::audit`. The server only supplies today's data.

// Answers are read as `serde_json::Value`, whose `value["key"]` yields Null for a missing key.
#![allow(clippy::indexing_slicing)]

use std::path::Path;

use anyhow::{Context, anyhow};
use serde_json::{Value, json};
use serin_core::audit::merkle::{self, Hash};
use serin_core::audit::{SignedHead, VerifiedHead, key_id, parse_public_key};

use crate::cli::{ClientArgs, Output};
use crate::client::Client;
use crate::{CheckFailed, out};

/// `serin audit head`: the current signed head, always as JSON so it can be saved.
pub async fn head(client: &ClientArgs) -> anyhow::Result<()> {
    let c = Client::new(client)?;
    let head: Value = c.get("/v1/audit/head").await?;
    out::json(&head);
    Ok(())
}

/// A saved head: the output of `serin audit head`, or the body the head webhook received.
fn read_head(path: &Path) -> anyhow::Result<SignedHead> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let mut v: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if v.get("action").and_then(Value::as_str) == Some("audit.head") {
        v = v["head"].take();
    }
    serde_json::from_value(v)
        .with_context(|| format!("{} is not a signed audit head", path.display()))
}

/// `--public-key`: 64 hex characters, or a file holding them.
fn read_public_key(arg: &str) -> anyhow::Result<[u8; 32]> {
    if let Ok(k) = parse_public_key(arg) {
        return Ok(k);
    }
    let text = std::fs::read_to_string(arg).with_context(|| {
        format!("--public-key {arg:?} is neither 64 hex characters nor a readable file")
    })?;
    parse_public_key(&text).map_err(|e| anyhow!("--public-key file {arg}: {e}"))
}

fn hash_of(v: &Value) -> Option<Hash> {
    hex::decode(v.as_str()?).ok()?.try_into().ok()
}

/// Names the first entry (1-based id) where today's log stops reproducing the saved head.
async fn locate(c: &Client, saved: &VerifiedHead) -> anyhow::Result<String> {
    let n = saved.tree_size;
    let Some(trusted) = &saved.subtrees else {
        return Ok(format!(
            "the first {n} entries no longer hash to the signed root (the head file carries no \
             subtrees that would say where)"
        ));
    };
    let now: Value = c.get(&format!("/v1/audit/subtrees?size={n}")).await?;
    let entries = now["entries"].as_u64().unwrap_or(0);
    let current: Vec<Option<Hash>> = now["subtrees"]
        .as_array()
        .map(|a| a.iter().map(|s| hash_of(&s["hash"])).collect())
        .unwrap_or_default();
    Ok(match merkle::first_divergence(trusted, &current) {
        None => format!("the first {n} entries no longer hash to the signed root"),
        Some((start, _)) if entries <= start => format!(
            "first bad entry: {} (the log holds {entries} entries, the head covers {n}: entries \
             from {} on were deleted)",
            start + 1,
            start + 1
        ),
        Some((start, 1)) => format!(
            "first bad entry: {} (it is not the entry the head signed: changed, removed, \
             inserted before or moved)",
            start + 1
        ),
        Some((start, size)) => format!(
            "first bad entry: among {}..={} (they no longer hash to what the head signed)",
            start + 1,
            start + size
        ),
    })
}

/// `serin audit verify --head FILE [--public-key KEY]`.
pub async fn verify_head(
    path: &Path,
    public_key: Option<&str>,
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let saved = read_head(path)?;
    let pinned = public_key.map(read_public_key).transpose()?;
    let saved = saved.verify(pinned.as_ref()).map_err(|e| {
        CheckFailed(format!(
            "the head in {} is not authentic: {e}",
            path.display()
        ))
    })?;
    let key = key_id(&saved.public_key);
    if pinned.is_none() && client.output == Output::Human {
        out::note(&format!(
            "note: the signature was checked with the key named in {} (key_id {key}); pass \
             --public-key to pin the key you trust",
            path.display()
        ));
    }
    let c = Client::new(client)?;
    let now: SignedHead = c
        .get("/v1/audit/head")
        .await
        .context("the server's current head is not a signed audit head")?;
    let now = now.verify(Some(&saved.public_key)).map_err(|e| {
        CheckFailed(format!(
            "the server's current head does not verify with the saved head's key: {e}"
        ))
    })?;
    let n = saved.tree_size;
    let fail = |reason: String| -> anyhow::Error {
        CheckFailed(format!(
            "the audit log does not extend the head of {n} entries: {reason}"
        ))
        .into()
    };
    if now.tree_size < n {
        return Err(fail(locate(&c, &saved).await?));
    }
    let proof: Value = c
        .get(&format!("/v1/audit/proof?from={n}&to={}", now.tree_size))
        .await?;
    let nodes: Vec<Hash> = proof["proof"]
        .as_array()
        .map(|a| a.iter().filter_map(hash_of).collect())
        .unwrap_or_default();
    let proved = nodes.len() == proof["proof"].as_array().map_or(0, Vec::len)
        && merkle::verify_consistency(n, now.tree_size, &saved.root, &now.root, &nodes);
    if !proved {
        return Err(fail(locate(&c, &saved).await?));
    }
    let chain: Value = c.get("/v1/audit/verify").await?;
    if chain["ok"].as_bool() != Some(true) {
        return Err(CheckFailed(format!(
            "audit chain broken at entry {}",
            chain["first_broken"]
        ))
        .into());
    }
    let signed_at = jiff::Timestamp::from_millisecond(saved.timestamp_ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| saved.timestamp_ms.to_string());
    if client.output == Output::Json {
        out::json(&json!({
            "ok": true,
            "head_tree_size": n,
            "head_signed_at": signed_at,
            "key_id": key,
            "entries": now.tree_size,
            "key_pinned": pinned.is_some(),
        }));
    } else {
        out::line(&format!(
            "audit log intact: its first {n} entries are exactly those of the head signed at \
             {signed_at} (key {key}); {} entries now",
            now.tree_size
        ));
    }
    Ok(())
}
