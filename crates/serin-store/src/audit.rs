//! Canonical JSON and the audit hash chain.

use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Compact JSON with object keys sorted by their UTF-8 bytes, recursively, independent of
/// serde_json's map ordering features.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(val, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The fields of an entry that its hash covers. `details` is the stored canonical JSON text.
pub(crate) struct HashedFields<'a> {
    pub id: i64,
    pub at_ms: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: &'a str,
    pub details: &'a str,
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// `canonical_json({action, actor, at_ms, details, id, subject})`: the entry as the chain hashes
/// it and as the audit Merkle tree's leaf.
///
/// The details are embedded as their stored canonical text (not re-serialised), so verification
/// never depends on float parsing round-trips.
pub(crate) fn entry_body(f: &HashedFields<'_>) -> String {
    format!(
        r#"{{"action":{},"actor":{},"at_ms":{},"details":{},"id":{},"subject":{}}}"#,
        json_str(f.action),
        json_str(f.actor),
        f.at_ms,
        f.details,
        f.id,
        json_str(f.subject),
    )
}

/// `hex(sha256(prev_hash ‖ entry_body))`.
pub(crate) fn entry_hash(prev_hash: &str, f: &HashedFields<'_>) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(entry_body(f).as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_recursively_and_is_compact() {
        let v = serde_json::json!({"b": 1, "a": {"z": [1, {"y": true, "x": null}], "c": "é"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"é","z":[1,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn entry_hash_is_sha256_of_prev_hash_then_canonical_body() {
        let details = canonical_json(&serde_json::json!({"k": "v"}));
        let f = HashedFields {
            id: 1,
            at_ms: 5,
            actor: "local",
            action: "a.b",
            subject: "s",
            details: &details,
        };
        let body = r#"{"action":"a.b","actor":"local","at_ms":5,"details":{"k":"v"},"id":1,"subject":"s"}"#;
        let mut h = Sha256::new();
        h.update(GENESIS_HASH.as_bytes());
        h.update(body.as_bytes());
        assert_eq!(entry_hash(GENESIS_HASH, &f), hex::encode(h.finalize()));
    }
}
