//! The data of routing: an env's control state, the snapshot SDKs receive,
//! flags, and the request context. Wire formats: every type here is part of
//! the snapshot JSON that SDKs in any language parse, so names are stable.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::bundle::Bundle;

/// A reference to one stored bundle.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BundleRef {
    /// `agent@N`.
    pub id: String,
    pub number: u64,
    /// `sha256:` digest of the bundle's canonical content.
    pub digest: String,
}

/// Which attribute of a request keeps a unit on the same arm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Stickiness {
    #[default]
    User,
    Tenant,
    Request,
}

/// A share of traffic in basis points (0..=10000). On the wire it is a string
/// such as `"5%"` or `"12.5%"`; a bare number is read as percent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u16);

/// Why a value could not be read as a percentage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PercentError {
    pub input: String,
}

impl fmt::Display for PercentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a percentage between 0% and 100% with at most two decimals",
            self.input
        )
    }
}

impl std::error::Error for PercentError {}

impl Percent {
    pub const ZERO: Percent = Percent(0);
    pub const FULL: Percent = Percent(10_000);

    pub fn from_basis_points(bp: u32) -> Result<Percent, PercentError> {
        u16::try_from(bp)
            .ok()
            .filter(|bp| *bp <= 10_000)
            .map(Percent)
            .ok_or_else(|| PercentError {
                input: format!("{bp}bp"),
            })
    }

    pub fn basis_points(self) -> u16 {
        self.0
    }

    /// Parses `"5%"`, `"12.5%"`, `"0.01%"` or `"5"` (percent).
    pub fn parse(s: &str) -> Result<Percent, PercentError> {
        let err = || PercentError {
            input: s.to_owned(),
        };
        let t = s.trim();
        let t = t.strip_suffix('%').unwrap_or(t).trim();
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if int.is_empty() || int.len() > 3 || frac.len() > 2 {
            return Err(err());
        }
        if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let int: u32 = int.parse().map_err(|_| err())?;
        let frac: u32 = if frac.is_empty() {
            0
        } else {
            let f: u32 = frac.parse().map_err(|_| err())?;
            if frac.len() == 1 { f * 10 } else { f }
        };
        let bp = int * 100 + frac;
        Percent::from_basis_points(bp).map_err(|_| err())
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{int}%"),
            f2 if f2 % 10 == 0 => write!(f, "{int}.{}%", f2 / 10),
            f2 => write!(f, "{int}.{f2:02}%"),
        }
    }
}

/// On the wire a percentage is a string such as `"12.5%"` (a bare number is
/// accepted on input as percent).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Percent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^\d{1,3}(\.\d{1,2})?%$"))
            .description(Some(
                "A share of traffic, 0% to 100% with at most two decimals",
            ))
            .examples(["12.5%"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Percent {}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Percent, D::Error> {
        // A visitor rather than an untagged enum of text or number: untagged enums buffer
        // every value into serde's `Content` before trying each variant.
        struct Raw;
        impl serde::de::Visitor<'_> for Raw {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage, as text such as \"12.5%\" or a number")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Percent, E> {
                Percent::parse(s).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Percent, E> {
                from_number(n).map_err(E::custom)
            }
            // Integers are read as the untagged `f64` variant did: converted, then checked.
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Percent, E> {
                from_number(n as f64).map_err(E::custom)
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Percent, E> {
                from_number(n as f64).map_err(E::custom)
            }
        }
        fn from_number(n: f64) -> Result<Percent, PercentError> {
            let bp = n * 100.0;
            if !(0.0..=10_000.0).contains(&bp) || (bp - bp.round()).abs() > 1e-6 {
                return Err(PercentError {
                    input: n.to_string(),
                });
            }
            // In range and integral: the cast is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Percent::from_basis_points(bp.round() as u32)
        }
        d.deserialize_any(Raw)
    }
}

/// The release currently splitting an agent's traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseRouting {
    /// The release id; the bucketing salt of the release arm.
    pub id: String,
    pub candidate: BundleRef,
    /// Share of (non-excluded) units on the candidate.
    pub weight: Percent,
    #[serde(default)]
    pub stickiness: Stickiness,
    /// Tenants that always get the stable bundle during the release.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub exclude_tenants: BTreeSet<String>,
    /// A release rolling out in waves: each request's weight is its wave's (the first wave,
    /// in this order, one of whose members is the request's attribute; a `*` member takes
    /// what no explicit member does), and a request in no wave stays on the stable. Empty:
    /// `weight` applies to every unit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveRouting>,
}

/// The request attribute a wave's members are values of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WaveKey {
    Region,
    Pool,
    Instance,
}

impl WaveKey {
    pub const ALL: [WaveKey; 3] = [WaveKey::Instance, WaveKey::Pool, WaveKey::Region];

    pub fn as_str(self) -> &'static str {
        match self {
            WaveKey::Region => "region",
            WaveKey::Pool => "pool",
            WaveKey::Instance => "instance",
        }
    }

    /// The request's value of this attribute.
    pub fn of<'a>(self, ctx: &Context<'a>) -> Option<&'a str> {
        match self {
            WaveKey::Region => ctx.region,
            WaveKey::Pool => ctx.pool,
            WaveKey::Instance => ctx.instance,
        }
    }
}

/// The member that stands for every value no wave names explicitly.
pub const WAVE_REST: &str = "*";

/// One wave of a release's routing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaveRouting {
    pub name: String,
    pub by: WaveKey,
    /// Values of `by`; [`WAVE_REST`] for the rest.
    pub members: BTreeSet<String>,
    /// The candidate's share of this wave's (non-excluded) units.
    pub weight: Percent,
}

/// Who switched something off, when, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    pub reason: String,
    pub actor: String,
    pub at_ms: i64,
}

/// Server-side state of one agent in one env. The deploy stack is kept here
/// (SDKs only receive its top two entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    /// Stables in deploy order, oldest first: the last is the stable, the one
    /// before it the previous stable (the rollback target).
    #[serde(default)]
    pub stack: Vec<BundleRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseRouting>,
    /// The whole agent is switched off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<Kill>,
    /// The agent is switched off for these tenants only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub killed_tenants: BTreeMap<String, Kill>,
}

/// The control state of one env: the source of truth that every mutation
/// (deploy, rollback, kill, flag change) rewrites as a new version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvState {
    #[serde(default)]
    pub agents: BTreeMap<String, AgentState>,
    #[serde(default)]
    pub flags: BTreeMap<String, Flag>,
}

/// What SDKs need to route one agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentRouting {
    pub stable: Option<BundleRef>,
    /// Kept warm in every SDK so a rollback needs no fetch.
    pub previous: Option<BundleRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseRouting>,
    #[serde(default)]
    pub killed: bool,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub killed_tenants: BTreeSet<String>,
}

/// Everything an SDK needs to decide locally for one env, at one version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Snapshot {
    pub env: String,
    /// Grows with every change; global across envs, so a version alone names
    /// one snapshot of one env.
    pub version: u64,
    pub published_at_ms: i64,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentRouting>,
    #[serde(default)]
    pub flags: BTreeMap<String, Flag>,
    /// The bundles the routing references (stable, previous, candidate), by
    /// id. In a stream update this may hold only the bundles new since the
    /// previous event; the receiver keeps the ones it already has.
    #[serde(default)]
    pub bundles: BTreeMap<String, Bundle>,
}

/// A request attribute that flag rules can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Attribute {
    User,
    Tenant,
    Workload,
    Region,
    Instance,
    Pool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Operator {
    In,
    NotIn,
}

/// Explicit per-unit targeting; deny wins over allow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Targets {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub users: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tenants: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub workloads: BTreeSet<String>,
}

/// When `attribute op values` holds, the rule decides: `on` for the first
/// `rollout` share of matching units, `off` for the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlagRule {
    pub attribute: Attribute,
    pub op: Operator,
    pub values: BTreeSet<String>,
    #[serde(default = "full")]
    pub rollout: Percent,
}

fn full() -> Percent {
    Percent::FULL
}

fn json_true() -> Value {
    Value::Bool(true)
}

fn json_false() -> Value {
    Value::Bool(false)
}

fn yes() -> bool {
    true
}

/// A named value evaluated per request. Evaluation order: disabled → `off`;
/// deny lists → `off`; allow lists → `on`; the first matching rule; otherwise
/// the flag-wide `rollout` share gets `on`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Flag {
    pub key: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "json_true")]
    pub on: Value,
    #[serde(default = "json_false")]
    pub off: Value,
    #[serde(default)]
    pub stickiness: Stickiness,
    #[serde(default)]
    pub allow: Targets,
    #[serde(default)]
    pub deny: Targets,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<FlagRule>,
    #[serde(default = "full")]
    pub rollout: Percent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The request being routed. Borrowed, so deciding allocates nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context<'a> {
    pub request_id: &'a str,
    pub user: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub workload: Option<&'a str>,
    pub instance: Option<&'a str>,
    pub region: Option<&'a str>,
    /// The serving pool (a cluster, a cell, a deployment group): what waves `by: pool` split on.
    pub pool: Option<&'a str>,
}

impl<'a> Context<'a> {
    /// A request with only its id; add attributes with the builder methods, which copy
    /// pointers and nothing else:
    /// `Context::new(request_id).user(user).tenant(tenant)`.
    pub const fn new(request_id: &'a str) -> Context<'a> {
        Context {
            request_id,
            user: None,
            tenant: None,
            workload: None,
            instance: None,
            region: None,
            pool: None,
        }
    }

    #[must_use]
    pub const fn user(mut self, user: &'a str) -> Context<'a> {
        self.user = Some(user);
        self
    }

    #[must_use]
    pub const fn tenant(mut self, tenant: &'a str) -> Context<'a> {
        self.tenant = Some(tenant);
        self
    }

    #[must_use]
    pub const fn workload(mut self, workload: &'a str) -> Context<'a> {
        self.workload = Some(workload);
        self
    }

    #[must_use]
    pub const fn instance(mut self, instance: &'a str) -> Context<'a> {
        self.instance = Some(instance);
        self
    }

    #[must_use]
    pub const fn region(mut self, region: &'a str) -> Context<'a> {
        self.region = Some(region);
        self
    }

    #[must_use]
    pub const fn pool(mut self, pool: &'a str) -> Context<'a> {
        self.pool = Some(pool);
        self
    }

    pub fn attribute(&self, a: Attribute) -> Option<&'a str> {
        match a {
            Attribute::User => self.user,
            Attribute::Tenant => self.tenant,
            Attribute::Workload => self.workload,
            Attribute::Region => self.region,
            Attribute::Instance => self.instance,
            Attribute::Pool => self.pool,
        }
    }
}

/// Which side of a release a request lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Arm {
    Stable,
    Canary,
    Killed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_parses_strings_and_numbers_and_refuses_absurd_values() {
        for (input, bp) in [
            ("5%", 500),
            ("12.5%", 1250),
            ("0.01%", 1),
            ("100%", 10_000),
            ("0", 0),
            (" 25 % ", 2500),
        ] {
            assert_eq!(Percent::parse(input).unwrap().basis_points(), bp, "{input}");
        }
        for bad in ["101%", "-1%", "1.234%", "abc", "", "%", "1e3", "NaN"] {
            assert!(Percent::parse(bad).is_err(), "{bad}");
        }
        let p: Percent = serde_json::from_str("12.5").unwrap();
        assert_eq!(p.basis_points(), 1250);
        assert!(serde_json::from_str::<Percent>("150").is_err());
        assert!(serde_json::from_str::<Percent>("-3").is_err());
        assert_eq!(
            serde_json::to_string(&Percent::parse("12.5%").unwrap()).unwrap(),
            "\"12.5%\""
        );
        assert_eq!(Percent::parse("0.05%").unwrap().to_string(), "0.05%");
    }
}
