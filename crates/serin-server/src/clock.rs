//! Time at the edge. Handlers, the release controller, drills and ingestion
//! mint timestamps here and pass them to the store, which persists what it is
//! given, so this module is the one place that decides what "now" is.
//!
//! The clock is wall time plus an offset that only ever grows. The offset is
//! zero unless the process opted in with [`make_adjustable`] (the binary's
//! `serin server --adjustable-clock`), after which [`advance`] moves time
//! forward: tests then step over a release's `min_duration` or an evidence
//! expiry instead of sleeping through it. Time never moves backwards, so
//! nothing that orders events by timestamp can be confused by it. The offset
//! is process-wide: a test that advances it runs the server in its own process.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

static OFFSET_MS: AtomicI64 = AtomicI64::new(0);
static ADJUSTABLE: AtomicBool = AtomicBool::new(false);

/// The largest single step: a year. Larger steps are almost surely a unit
/// mistake (seconds passed as milliseconds the other way round).
pub const MAX_ADVANCE_MS: i64 = 366 * 24 * 3_600_000;

/// Milliseconds since the Unix epoch, plus any offset [`advance`] added.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now()
        .as_millisecond()
        .saturating_add(OFFSET_MS.load(Ordering::Relaxed))
}

/// Allows [`advance`] in this process. There is no way back: a clock that was
/// moved forward stays ahead.
pub fn make_adjustable() {
    ADJUSTABLE.store(true, Ordering::Relaxed);
}

pub fn is_adjustable() -> bool {
    ADJUSTABLE.load(Ordering::Relaxed)
}

/// How far the clock is ahead of wall time.
pub fn offset_ms() -> i64 {
    OFFSET_MS.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClockError {
    #[error("this server's clock is wall time; start it with --adjustable-clock to move it")]
    NotAdjustable,
    #[error("advance by 1 to {MAX_ADVANCE_MS} ms; got {0}")]
    OutOfRange(i64),
}

/// Whether [`advance`] would take `ms`.
pub fn check_advance(ms: i64) -> Result<(), ClockError> {
    if !is_adjustable() {
        return Err(ClockError::NotAdjustable);
    }
    if !(1..=MAX_ADVANCE_MS).contains(&ms) {
        return Err(ClockError::OutOfRange(ms));
    }
    Ok(())
}

/// Moves this process's clock forward by `ms` and returns the new now.
pub fn advance(ms: i64) -> Result<i64, ClockError> {
    check_advance(ms)?;
    OFFSET_MS.fetch_add(ms, Ordering::Relaxed);
    Ok(now_ms())
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

    // Adjusting is covered by the binary's tests (`tests/it/clock.rs`): the
    // offset is process-wide, so this unit test binary never turns it on.
    #[test]
    fn the_clock_is_wall_time_unless_made_adjustable() {
        assert_eq!(super::advance(1_000), Err(super::ClockError::NotAdjustable));
        assert_eq!(super::offset_ms(), 0);
    }
}
