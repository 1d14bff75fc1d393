//! Small JSON helpers: canonical serialisation and JSON pointers.

use std::fmt::Write as _;

use serde_json::Value;

/// Serialises `value` with object keys sorted (by their UTF-8 bytes) and no whitespace.
pub fn to_canonical_string(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_canonical(out, item);
            }
            out.push('}');
        }
    }
}

/// Writes a JSON string literal with serde_json's escaping.
fn write_string(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        // Serialising a &str cannot fail; escape by hand rather than panic if it ever did.
        Err(_) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
    }
}

/// Escapes one JSON pointer reference token (RFC 6901).
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Appends a reference token to a pointer.
pub fn join(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", escape_token(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_string_sorts_keys_at_every_depth_and_has_no_whitespace() {
        let v = json!({"b": 1, "a": {"z": [true, null, "x\"y\n"], "m": 1.5}});
        assert_eq!(
            to_canonical_string(&v),
            r#"{"a":{"m":1.5,"z":[true,null,"x\"y\n"]},"b":1}"#
        );
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(join("/a", "b/c~d"), "/a/b~1c~0d");
    }
}
