//! JSON pointers (RFC 6901) for naming the field an error is about.

/// Escapes one pointer segment: `~` as `~0`, `/` as `~1`.
pub fn escape(segment: &str) -> String {
    serin_engine::bundle::json::escape_token(segment)
}

/// `/a/0/b` from the path serde_path_to_error reports; empty for the root.
pub fn from_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        let part = match seg {
            Segment::Seq { index } => index.to_string(),
            Segment::Map { key } | Segment::Enum { variant: key } => escape(key),
            Segment::Unknown => continue,
        };
        out.push('/');
        out.push_str(&part);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_and_builds_pointers() {
        assert_eq!(super::escape("a/b~c"), "a~1b~0c");
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            items: Vec<Inner>,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
        }
        let json = r#"{"items":[{"n":1},{"n":"x"}]}"#;
        let err = serde_path_to_error::deserialize::<_, Outer>(
            &mut serde_json::Deserializer::from_str(json),
        )
        .unwrap_err();
        assert_eq!(super::from_path(err.path()), "/items/1/n");
    }
}
