//! Durations in plans: `30s`, `5m`, `2h`, `1d`, `250ms` and combinations such as `1h30m`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// The longest duration a plan may name: 365 days.
pub const MAX_DURATION_MS: u64 = 365 * DAY;

/// Units from largest to smallest; a duration names each at most once, in this order.
const UNITS: [(&str, u64); 5] = [
    ("d", DAY),
    ("h", HOUR),
    ("m", MINUTE),
    ("s", SECOND),
    ("ms", 1),
];

/// A non-negative duration with millisecond resolution, written `1h30m` on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationSpec(u64);

/// Why a text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration: {reason} (write e.g. 30s, 5m, 2h, 1d or 1h30m)")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

impl DurationSpec {
    pub const ZERO: DurationSpec = DurationSpec(0);

    pub fn from_ms(ms: u64) -> DurationSpec {
        DurationSpec(ms)
    }

    pub fn as_ms(self) -> u64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Parses one or more `<digits><unit>` parts, units `d h m s ms`, each at most once and
    /// from the largest to the smallest (`1h30m`, not `30m1h`). No sign, no spaces inside.
    pub fn parse(s: &str) -> Result<DurationSpec, DurationError> {
        let err = |reason| DurationError {
            input: s.to_owned(),
            reason,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        if t.starts_with('-') {
            return Err(err("it must not be negative"));
        }
        let mut rest = t;
        let mut total: u64 = 0;
        // Index into UNITS of the smallest unit used so far; the next must be smaller.
        let mut next_unit = 0usize;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("each part must start with a number"));
            }
            let (num, tail) = rest.split_at(digits);
            let letters = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
            let (unit, tail) = tail.split_at(letters);
            if unit.is_empty() {
                return Err(err("each number needs a unit (d, h, m, s or ms)"));
            }
            let Some(pos) = UNITS.iter().position(|(name, _)| *name == unit) else {
                return Err(err("unknown unit (use d, h, m, s or ms)"));
            };
            if pos < next_unit {
                return Err(err("units must go from largest to smallest, each once"));
            }
            next_unit = pos + 1;
            let factor = UNITS.get(pos).map_or(1, |(_, f)| *f);
            let n: u64 = num.parse().map_err(|_| err("the number is too large"))?;
            total = n
                .checked_mul(factor)
                .and_then(|v| total.checked_add(v))
                .filter(|v| *v <= MAX_DURATION_MS)
                .ok_or_else(|| err("it is longer than 365 days"))?;
            rest = tail;
        }
        Ok(DurationSpec(total))
    }
}

impl fmt::Display for DurationSpec {
    /// Canonical compact form: `1h30m`, `0s`, `1s500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (name, factor) in UNITS {
            let n = rest / factor;
            if n > 0 {
                write!(f, "{n}{name}")?;
                rest -= n * factor;
            }
        }
        Ok(())
    }
}

/// A remaining wait for people: whole seconds rounded up, parts separated by spaces
/// (`3m 20s`, `1h 5s`, `1s` for anything under a second but above zero).
pub fn human_ms(ms: u64) -> String {
    let secs = ms.div_ceil(SECOND);
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut rest = secs * SECOND;
    let mut parts = Vec::new();
    for (name, factor) in UNITS.iter().take(4) {
        let n = rest / factor;
        if n > 0 {
            parts.push(format!("{n}{name}"));
            rest -= n * factor;
        }
    }
    parts.join(" ")
}

/// On the wire a duration is a string such as `"5m"` or `"1h 30m"`.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for DurationSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A duration such as `90s`, `5m` or `1h 30m`"))
            .examples(["5m"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for DurationSpec {}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DurationSpec, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit such as 30s, 5m, 2h, 1d or 1h30m")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationSpec, E> {
                DurationSpec::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}
