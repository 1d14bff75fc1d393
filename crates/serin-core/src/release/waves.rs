//! Rolling waves (`waves:` in `plan.yaml`): the release opens to one region or pool at a
//! time, each wave running its own canary steps and baking before the next one opens.
//!
//! A waved plan is run as a flat list of [`Stage`]s: every wave's steps in wave order (a
//! one-box stage first when the plan names one). The release's `step` indexes that list, so
//! the state machine keeps one cursor, one gate and one history whatever the plan's shape.
//! A wave's bake time and minimum outcomes are folded into the gate of its last step: the
//! next wave cannot open before the wave has served its final weight for `bake` and seen
//! `min_outcomes` canary outcomes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::duration::DurationSpec;
use super::plan::{CanaryStep, PlanError, Step};
use crate::decision::{MAX_WAVES, Percent, WAVE_REST, WaveKey};

/// The name of the stage a plan's `one_box` adds before its first wave.
pub const ONE_BOX: &str = "one-box";

/// The `waves:` section of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Waves {
    /// The request attribute the waves split on (`region` or `pool`; the SDK reports both).
    pub by: WaveKey,
    /// The waves, in the order they open.
    pub list: Vec<WaveSpec>,
    /// How long each wave serves its final weight before the next wave opens (a wave's own
    /// `bake` overrides it).
    #[serde(default)]
    pub bake: DurationSpec,
    /// Canary outcomes each wave must see at its final weight before the next wave opens.
    #[serde(default)]
    pub min_outcomes: u64,
    /// A wave whose members send no traffic at all: `wait` for it, or `skip` it once its
    /// first step's time has passed.
    #[serde(default)]
    pub no_traffic: NoTraffic,
    /// The most a wave's weight may rise in one step (how much of a pool changes at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step: Option<Percent>,
    /// One instance serves the candidate alone before the first wave opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_box: Option<OneBox>,
}

/// One wave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaveSpec {
    pub name: String,
    /// Values of the waves' attribute (`us-east`), or `"*"`: every value no wave names.
    pub members: BTreeSet<String>,
    /// This wave's canary steps; the plan's `steps` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Step>>,
    /// Open the wave at 100% in one step (gated by its bake and minimum outcomes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<DurationSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_outcomes: Option<u64>,
}

/// What a wave with no traffic does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NoTraffic {
    /// Wait for traffic: the wave's gate needs its outcomes (a person can force it on).
    #[default]
    Wait,
    /// Skip the wave once its first step's time has passed without a single request; its
    /// members stay on the stable until the release completes.
    Skip,
}

/// The one-box stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OneBox {
    /// The SDK instance (its `instance` attribute) that serves the candidate alone.
    pub instance: String,
}

/// One entry of a plan's flat list of steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Index into [`Waves::waves`]; `None` in a plan without waves.
    pub wave: Option<usize>,
    /// The step, with a wave's bake and minimum outcomes folded into its last step.
    pub step: CanaryStep,
    /// The wave's last step.
    pub last_of_wave: bool,
}

/// One wave as the release runs it (the one box included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveDef {
    pub name: String,
    pub by: WaveKey,
    pub members: BTreeSet<String>,
    pub steps: Vec<CanaryStep>,
}

impl Waves {
    /// The waves in the order they open: the one box (if any), then `list`, each with its
    /// steps resolved (`open`, the plan's steps, or its own) and its bake and minimum
    /// outcomes folded into its last step.
    pub fn waves(&self, plan_steps: &[Step]) -> Vec<WaveDef> {
        let mut out = Vec::with_capacity(self.list.len() + 1);
        if let Some(b) = &self.one_box {
            out.push(WaveDef {
                name: ONE_BOX.to_owned(),
                by: WaveKey::Instance,
                members: BTreeSet::from([b.instance.clone()]),
                steps: vec![CanaryStep {
                    weight: Percent::FULL,
                    min_duration: self.bake,
                    min_requests: self.min_outcomes,
                    require: None,
                }],
            });
        }
        for w in &self.list {
            let bake = w.bake.unwrap_or(self.bake);
            let min_outcomes = w.min_outcomes.unwrap_or(self.min_outcomes);
            let mut steps: Vec<CanaryStep> = if w.open {
                vec![CanaryStep {
                    weight: Percent::FULL,
                    min_duration: DurationSpec::ZERO,
                    min_requests: 0,
                    require: None,
                }]
            } else {
                w.steps
                    .as_deref()
                    .unwrap_or(plan_steps)
                    .iter()
                    .map(|s| s.canary().clone())
                    .collect()
            };
            if let Some(last) = steps.last_mut() {
                last.min_duration = last.min_duration.max(bake);
                last.min_requests = last.min_requests.max(min_outcomes);
            }
            out.push(WaveDef {
                name: w.name.clone(),
                by: self.by,
                members: w.members.clone(),
                steps,
            });
        }
        out
    }

    /// The flat list of stages.
    pub fn stages(&self, plan_steps: &[Step]) -> Vec<Stage> {
        let mut out = Vec::new();
        for (i, w) in self.waves(plan_steps).into_iter().enumerate() {
            let n = w.steps.len();
            for (j, step) in w.steps.into_iter().enumerate() {
                out.push(Stage {
                    wave: Some(i),
                    step,
                    last_of_wave: j + 1 == n,
                });
            }
        }
        out
    }

    /// Refuses waves that cannot run as meant (pointers are under `/waves`):
    /// - at least one wave, at most [`MAX_WAVES`] with the one box; names are unique slugs
    ///   (and not `one-box`, which the one box uses);
    /// - every wave has members; no member is in two waves (overlapping waves would route a
    ///   request by whichever came first, and a breach could not be told apart); `"*"` in
    ///   at most one wave, and alone there;
    /// - a wave gives its own `steps` or `open: true`, not both; its steps rise strictly,
    ///   above 0%, and end at 100% (a wave is done only once all its members serve the
    ///   candidate);
    /// - `max_step` is above 0%, and no step of any wave rises by more than it;
    /// - the one box names a valid instance id.
    pub fn validate(&self) -> Result<(), PlanError> {
        let inv = |p: String, m: String| PlanError::invalid(format!("/waves{p}"), m);
        if self.list.is_empty() {
            return Err(inv("/list".into(), "waves need at least one wave".into()));
        }
        let total = self.list.len() + usize::from(self.one_box.is_some());
        if total > MAX_WAVES {
            return Err(inv(
                "/list".into(),
                format!("{total} waves; at most {MAX_WAVES}"),
            ));
        }
        if matches!(self.by, WaveKey::Instance) {
            return Err(inv(
                "/by".into(),
                "waves split on region or pool; a single instance goes first with one_box".into(),
            ));
        }
        if let Some(cap) = self.max_step
            && cap == Percent::ZERO
        {
            return Err(inv(
                "/max_step".into(),
                "max_step must be above 0%: a cap of 0% would never let a wave change".into(),
            ));
        }
        if let Some(b) = &self.one_box {
            crate::slug::validate_instance(&b.instance)
                .map_err(|e| inv("/one_box/instance".into(), e.to_string()))?;
        }
        let mut names = BTreeSet::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut rest = false;
        for (i, w) in self.list.iter().enumerate() {
            let p = format!("/list/{i}");
            crate::slug::validate_instance(&w.name)
                .map_err(|e| inv(format!("{p}/name"), format!("wave name: {e}")))?;
            if w.name == ONE_BOX {
                return Err(inv(
                    format!("{p}/name"),
                    format!("{ONE_BOX} is the name of the one-box stage; pick another"),
                ));
            }
            if !names.insert(w.name.as_str()) {
                return Err(inv(
                    format!("{p}/name"),
                    format!("two waves are named {}", w.name),
                ));
            }
            if w.members.is_empty() {
                return Err(inv(
                    format!("{p}/members"),
                    format!("wave {} has no members", w.name),
                ));
            }
            for m in &w.members {
                if m == WAVE_REST {
                    if rest {
                        return Err(inv(
                            format!("{p}/members"),
                            "\"*\" (every other member) may appear in one wave only".into(),
                        ));
                    }
                    if w.members.len() > 1 {
                        return Err(inv(
                            format!("{p}/members"),
                            "\"*\" stands for every member no other wave names; list it alone"
                                .into(),
                        ));
                    }
                    rest = true;
                    continue;
                }
                if m.trim().is_empty() || m.trim() != m || m.len() > 128 {
                    return Err(inv(
                        format!("{p}/members"),
                        format!(
                            "member {m:?} must be 1 to 128 bytes without surrounding whitespace"
                        ),
                    ));
                }
                if !seen.insert(m.as_str()) {
                    return Err(inv(
                        format!("{p}/members"),
                        format!(
                            "{} {m} is in two waves; waves must not overlap",
                            self.by.as_str()
                        ),
                    ));
                }
            }
            if w.open
                && let Some(cap) = self.max_step
                && cap != Percent::FULL
            {
                return Err(inv(
                    format!("{p}/open"),
                    format!(
                        "open: true moves the whole wave at once, more than max_step {cap}; give the wave steps"
                    ),
                ));
            }
            if w.open && w.steps.is_some() {
                return Err(inv(
                    format!("{p}/open"),
                    "a wave has its own steps or open: true, not both".into(),
                ));
            }
            if let Some(steps) = &w.steps
                && steps.is_empty()
            {
                return Err(inv(
                    format!("{p}/steps"),
                    "a wave's own steps need at least one step (or say open: true)".into(),
                ));
            }
        }
        Ok(())
    }

    /// Checks each resolved wave's steps (pointer: the wave's entry, or `/steps` for the
    /// plan's steps a wave inherits).
    pub fn validate_steps(&self, plan_steps: &[Step]) -> Result<(), PlanError> {
        let defs = self.waves(plan_steps);
        let offset = usize::from(self.one_box.is_some());
        for (k, def) in defs.iter().enumerate() {
            let pointer = match k.checked_sub(offset) {
                None => "/waves/one_box".to_owned(),
                Some(i) => match self.list.get(i) {
                    Some(w) if w.steps.is_some() => format!("/waves/list/{i}/steps"),
                    Some(w) if w.open => format!("/waves/list/{i}/open"),
                    _ => "/steps".to_owned(),
                },
            };
            let mut previous = Percent::ZERO;
            for (j, s) in def.steps.iter().enumerate() {
                if s.weight <= previous {
                    return Err(PlanError::invalid(
                        format!("{pointer}/{j}"),
                        format!(
                            "wave {}: weights must rise from step to step, above 0% ({} after {previous})",
                            def.name, s.weight
                        ),
                    ));
                }
                // The one box is a single instance: the cap is about pools.
                if let Some(cap) = self.max_step.filter(|_| def.by != WaveKey::Instance) {
                    let rise = s.weight.basis_points() - previous.basis_points();
                    if rise > cap.basis_points() {
                        return Err(PlanError::invalid(
                            format!("{pointer}/{j}"),
                            format!(
                                "wave {}: step {} rises from {previous} to {}, more than max_step {cap}",
                                def.name,
                                j + 1,
                                s.weight
                            ),
                        ));
                    }
                }
                previous = s.weight;
            }
            if previous != Percent::FULL {
                return Err(PlanError::invalid(
                    pointer,
                    format!(
                        "wave {} ends at {previous}; a wave's last step must be 100% (the next wave opens once all its members serve the candidate)",
                        def.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every explicit member value (for warnings about members no SDK reports).
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.list
            .iter()
            .flat_map(|w| w.members.iter())
            .map(String::as_str)
            .filter(|m| *m != WAVE_REST)
    }
}

/// Separates a candidate from its wave in a comparison id; bundle ids (`agent@N`) and wave
/// names (`[A-Za-z0-9._:-]`) never contain it.
pub const WAVE_SEP: char = '~';

/// The id of wave `wave`'s own comparison of a release of `candidate` (`support@5~eu`): each
/// wave is judged by its own monitor, stored and shown under this id.
pub fn wave_comparison(candidate: &str, wave: &str) -> String {
    format!("{candidate}{WAVE_SEP}{wave}")
}

/// A comparison id as its candidate and, for a wave's comparison, the wave.
pub fn split_comparison(id: &str) -> (&str, Option<&str>) {
    match id.split_once(WAVE_SEP) {
        Some((candidate, wave)) => (candidate, Some(wave)),
        None => (id, None),
    }
}
