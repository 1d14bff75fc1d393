//! Wall-clock time at the edge. Handlers mint timestamps here and pass them to
//! the store, which persists what it is given.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// RFC 3339 rendering of a millisecond timestamp, in UTC.
pub fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.to_string(),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_utc_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
