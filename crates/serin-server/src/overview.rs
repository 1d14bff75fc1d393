//! The overview behind `GET /v1/status`, `serin status` and the dashboard: every registered
//! env × every agent with state in it, with its deploy stack, kill switches, active release
//! (step, weight, gate progress, verdicts) and the env's SDK fleet, next to the replica
//! registry.
//!
//! [`assemble`] is pure: it turns what [`gather`] read (env states, active release views,
//! fleet lists) into the answer, so its rules are tested with plain data. [`gather`] reads
//! only the store and the registries every replica shares, so any replica answers the same.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serin_core::decision::{EnvState, Percent};
use serin_core::guardrails::VerdictStatus;
use serin_core::release::Phase;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::releases::ReleaseView;
use crate::routes::system::{ReplicaInfo, ReplicaLeader, ReplicaList};
use crate::sdks::SdkInstance;

/// What `GET /v1/status` answers: the overview, then the replica registry exactly as
/// `GET /v1/system/replicas` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Overview {
    /// Every registered env, by name.
    pub envs: Vec<EnvOverview>,
    /// The answering server's now (unix ms).
    pub now_ms: i64,
    /// The id of the replica that answered.
    pub served_by: String,
    /// The live replica leading the release controller; absent while none does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<ReplicaLeader>,
    /// The store's current leadership epoch.
    pub epoch: i64,
    /// The store's newest version of every env some replica serves.
    pub newest_versions: BTreeMap<String, i64>,
    /// Every replica seen within the last hour, oldest start first.
    pub replicas: Vec<ReplicaInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct EnvOverview {
    pub env: String,
    /// Strict envs refuse moving model aliases and direct deploys without force.
    pub strict: bool,
    /// The env's newest snapshot version (0 before its first change).
    pub version: u64,
    /// Why the env's agents cannot be listed (its newest stored state is unreadable and
    /// quarantined); absent when all is well.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_attention: Option<String>,
    pub sdks: SdkSummary,
    /// Every agent with routing state in the env, by name.
    pub agents: Vec<AgentOverview>,
}

/// The SDK instances following an env on any replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct SdkSummary {
    /// Instances with a snapshot stream open.
    pub connected: u64,
    /// Connected instances and those seen in the last 10 minutes.
    pub known: u64,
    /// Over connected instances: the env's newest version minus the version each reports
    /// applied (an instance that reported none counts from 0). 0 with none connected.
    pub max_lag: u64,
    /// Connected instances not serving the newest version.
    pub lagging: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct AgentOverview {
    pub agent: String,
    /// `agent@N` serving outside any release.
    pub stable: Option<String>,
    /// The rollback target (the deploy stack's entry below the stable).
    pub previous: Option<String>,
    /// The deploy stack, oldest first; its last entry is the stable.
    pub stack: Vec<String>,
    pub kill: KillState,
    /// The release owning the agent in this env; absent when none is active.
    pub release: Option<ReleaseSummary>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct KillState {
    /// The whole agent is switched off.
    pub killed: bool,
    /// Why, when `killed`.
    pub reason: Option<String>,
    /// Tenants the agent is switched off for, by name.
    pub tenants: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ReleaseSummary {
    pub id: String,
    /// `pending`, `canary`, `paused`, `promoting` or `halted` (an active release).
    pub phase: String,
    pub candidate: String,
    pub baseline: String,
    /// The current step, counted from 0.
    pub step_index: usize,
    /// Steps in the plan.
    pub steps: usize,
    /// The share of traffic the current step routes to the candidate.
    #[schema(value_type = String, example = "5%")]
    pub weight: Percent,
    pub paused: bool,
    /// Canary requests judged so far.
    pub canary_requests: u64,
    /// The current step's gate; absent outside `canary` and `paused`.
    pub gate: Option<GateProgress>,
    /// Each guardrail bound's verdict, in the plan's order.
    pub verdicts: Vec<VerdictSummary>,
}

/// How far the current step is from its minimums.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct GateProgress {
    pub holds: bool,
    /// Canary requests during this step, and the step's `min_requests`.
    pub requests: u64,
    pub min_requests: u64,
    /// Time in this step, and the step's `min_duration`, in ms.
    pub elapsed_ms: u64,
    pub min_duration_ms: u64,
    /// What the gate still needs, in words.
    pub missing: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct VerdictSummary {
    /// `error_rate.max_increase` style: metric and bound.
    pub guardrail: String,
    #[schema(value_type = String, example = "pending")]
    pub verdict: VerdictStatus,
    /// A shadow bound is reported but never gates.
    pub shadow: bool,
}

/// One env as read from the store and the fleet registry.
#[derive(Debug)]
pub struct EnvInput {
    pub env: String,
    pub strict: bool,
    pub version: u64,
    pub state: EnvState,
    /// Set when the newest stored state could not be read (`state` is then empty).
    pub needs_attention: Option<String>,
    /// The active release view of each agent that has one.
    pub releases: BTreeMap<String, ReleaseView>,
    pub sdks: Vec<SdkSeen>,
}

/// What the overview needs of one SDK instance (the fleet list has much more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdkSeen {
    pub connected: bool,
    /// The newest version it reports serving.
    pub applied_version: Option<u64>,
}

impl From<&SdkInstance> for SdkSeen {
    fn from(i: &SdkInstance) -> SdkSeen {
        SdkSeen {
            connected: i.connected,
            applied_version: i.applied_version,
        }
    }
}

/// The overview of `envs` (in any order) beside the replica registry.
pub fn assemble(mut envs: Vec<EnvInput>, replicas: ReplicaList) -> Overview {
    envs.sort_by(|a, b| a.env.cmp(&b.env));
    Overview {
        envs: envs.into_iter().map(env_overview).collect(),
        now_ms: replicas.now_ms,
        served_by: replicas.served_by,
        leader: replicas.leader,
        epoch: replicas.epoch,
        newest_versions: replicas.newest_versions,
        replicas: replicas.replicas,
    }
}

fn env_overview(input: EnvInput) -> EnvOverview {
    let EnvInput {
        env,
        strict,
        version,
        state,
        needs_attention,
        mut releases,
        sdks,
    } = input;
    let agents = state
        .agents
        .into_iter()
        .map(|(agent, st)| {
            let stack: Vec<String> = st.stack.iter().map(|b| b.id.clone()).collect();
            let release = releases
                .remove(&agent)
                .filter(|v| v.release.phase.is_active())
                .map(|v| release_summary(&v));
            AgentOverview {
                stable: stack.last().cloned(),
                previous: stack
                    .len()
                    .checked_sub(2)
                    .and_then(|i| stack.get(i))
                    .cloned(),
                stack,
                kill: KillState {
                    killed: st.kill.is_some(),
                    reason: st.kill.map(|k| k.reason),
                    tenants: st.killed_tenants.into_keys().collect(),
                },
                release,
                agent,
            }
        })
        .collect();
    EnvOverview {
        sdks: sdk_summary(&sdks, version),
        env,
        strict,
        version,
        needs_attention,
        agents,
    }
}

fn sdk_summary(sdks: &[SdkSeen], newest: u64) -> SdkSummary {
    let lags: Vec<u64> = sdks
        .iter()
        .filter(|s| s.connected)
        .map(|s| newest.saturating_sub(s.applied_version.unwrap_or(0)))
        .collect();
    SdkSummary {
        connected: lags.len() as u64,
        known: sdks.len() as u64,
        max_lag: lags.iter().copied().max().unwrap_or(0),
        lagging: lags.iter().filter(|l| **l > 0).count() as u64,
    }
}

fn release_summary(v: &ReleaseView) -> ReleaseSummary {
    let r = &v.release;
    ReleaseSummary {
        id: r.id.clone(),
        phase: r.phase.as_str().to_owned(),
        candidate: r.candidate.id.clone(),
        baseline: r.baseline.id.clone(),
        step_index: r.step,
        steps: r.plan.stages().len(),
        weight: v.weight,
        paused: r.phase == Phase::Paused,
        canary_requests: v.canary_requests,
        gate: v.gate.as_ref().map(|g| GateProgress {
            holds: g.holds,
            requests: g.requests,
            min_requests: g.needed_requests,
            elapsed_ms: g.elapsed_ms,
            min_duration_ms: g.needed_ms,
            missing: g.missing.clone(),
        }),
        verdicts: v
            .verdicts
            .iter()
            .map(|v| VerdictSummary {
                guardrail: v.guardrail.clone(),
                verdict: v.status,
                shadow: v.shadow,
            })
            .collect(),
    }
}

/// Reads everything [`assemble`] needs: the env registry, each env's newest state, the
/// active release of every agent in it, and the fleet.
pub async fn gather(state: &AppState) -> ApiResult<Overview> {
    let mut envs = Vec::new();
    for rec in state.envs.list().await? {
        let stored = state.store.latest_env_state(&rec.name).await?;
        let mut needs_attention = None;
        let (version, env_state) = match &stored {
            Some(s) => {
                let version = u64::try_from(s.version).unwrap_or(0);
                // One unreadable env must not hide every other: it is reported, not fatal
                // (the hub has quarantined it and serves the env's last good version).
                match crate::hub::parse_state(s) {
                    Ok(st) => (version, st),
                    Err(_) => {
                        needs_attention = Some(format!(
                            "the newest stored state of {} (v{version}) is unreadable; \
                             see GET /v1/system/quarantine",
                            rec.name
                        ));
                        (version, EnvState::default())
                    }
                }
            }
            None => (0, EnvState::default()),
        };
        let mut releases = BTreeMap::new();
        for agent in env_state.agents.keys() {
            if state.releases.active(&rec.name, agent).await?.is_none() {
                continue;
            }
            // The row can finish or turn unreadable between the two reads; the agent is
            // then shown without a release rather than failing the whole overview.
            match state.releases.current(&rec.name, agent).await {
                Ok(view) => {
                    releases.insert(agent.clone(), view);
                }
                Err(e) => {
                    tracing::debug!(env = %rec.name, agent, error = %e.message, "release left out of the overview")
                }
            }
        }
        envs.push(EnvInput {
            sdks: state
                .sdks
                .list_fleet(&rec.name)
                .await?
                .iter()
                .map(SdkSeen::from)
                .collect(),
            env: rec.name,
            strict: rec.strict,
            version,
            state: env_state,
            needs_attention,
            releases,
        });
    }
    let replicas = crate::routes::system::replica_list(state).await?;
    Ok(assemble(envs, replicas))
}

/// The newest overview computed for the live streams, shared by all of them: N open
/// overview streams cost one [`gather`] a second, not N. Callers wait on the lock while one
/// of them recomputes, then take its result.
#[derive(Debug, Default)]
pub struct Shared {
    latest: tokio::sync::Mutex<Option<(Instant, Arc<Keyed>)>>,
}

/// An overview and its change key.
pub type Keyed = (Overview, String);

impl Shared {
    /// The overview and its change key (see [`Overview::without_clock`]), recomputed when
    /// the shared one is older than `max_age`.
    pub async fn get(&self, state: &AppState, max_age: Duration) -> ApiResult<Arc<Keyed>> {
        let mut latest = self.latest.lock().await;
        if let Some((at, v)) = latest.as_ref()
            && at.elapsed() < max_age
        {
            return Ok(v.clone());
        }
        let o = gather(state).await?;
        let key = serde_json::to_string(&o.without_clock()).map_err(ApiError::internal)?;
        let v = Arc::new((o, key));
        *latest = Some((Instant::now(), v.clone()));
        Ok(v)
    }
}

impl Overview {
    /// The overview without what changes by itself as time passes (the answering clock and
    /// replicas' heartbeat ages), so a stream sends only when something happened.
    pub fn without_clock(&self) -> Overview {
        let mut o = self.clone();
        o.now_ms = 0;
        for r in &mut o.replicas {
            r.last_seen_ms = 0;
            r.last_seen_ago_ms = 0;
        }
        o
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use serin_core::decision::{AgentState, BundleRef, Kill};

    fn bundle(agent: &str, n: u64) -> BundleRef {
        BundleRef {
            id: format!("{agent}@{n}"),
            number: n,
            digest: format!("sha256:{n:064}"),
        }
    }

    fn sdk(connected: bool, applied_version: Option<u64>) -> SdkSeen {
        SdkSeen {
            connected,
            applied_version,
        }
    }

    fn replicas() -> ReplicaList {
        ReplicaList {
            now_ms: 5,
            served_by: "r1".into(),
            leader: None,
            epoch: 1,
            newest_versions: BTreeMap::new(),
            replicas: Vec::new(),
        }
    }

    #[test]
    fn an_agent_shows_its_stack_top_two_and_its_kills() {
        let mut state = EnvState::default();
        let kill = Kill {
            reason: "incident".into(),
            actor: "token:a".into(),
            at_ms: 1,
        };
        state.agents.insert(
            "support".into(),
            AgentState {
                stack: vec![
                    bundle("support", 1),
                    bundle("support", 2),
                    bundle("support", 3),
                ],
                release: None,
                kill: Some(kill.clone()),
                killed_tenants: BTreeMap::from([("acme".into(), kill)]),
            },
        );
        state.agents.insert(
            "billing".into(),
            AgentState {
                stack: vec![bundle("billing", 1)],
                ..AgentState::default()
            },
        );
        let o = assemble(
            vec![EnvInput {
                env: "prod".into(),
                strict: true,
                version: 9,
                state,
                needs_attention: None,
                releases: BTreeMap::new(),
                sdks: Vec::new(),
            }],
            replicas(),
        );
        let agents = &o.envs[0].agents;
        assert_eq!(agents[0].agent, "billing");
        assert_eq!(agents[0].stable.as_deref(), Some("billing@1"));
        assert_eq!(agents[0].previous, None);
        assert!(!agents[0].kill.killed);
        let support = &agents[1];
        assert_eq!(support.stable.as_deref(), Some("support@3"));
        assert_eq!(support.previous.as_deref(), Some("support@2"));
        assert_eq!(support.stack.len(), 3);
        assert!(support.kill.killed);
        assert_eq!(support.kill.reason.as_deref(), Some("incident"));
        assert_eq!(support.kill.tenants, vec!["acme".to_owned()]);
        assert!(support.release.is_none());
    }

    #[test]
    fn sdk_lag_counts_only_connected_instances_against_the_newest_version() {
        let fleet = [
            sdk(true, Some(10)),
            sdk(true, Some(7)),
            sdk(true, None),
            sdk(false, Some(1)),
        ];
        let s = sdk_summary(&fleet, 10);
        assert_eq!(
            s,
            SdkSummary {
                connected: 3,
                known: 4,
                max_lag: 10,
                lagging: 2
            }
        );
        assert_eq!(sdk_summary(&[sdk(false, None)], 10).max_lag, 0);
    }

    #[test]
    fn envs_come_out_by_name_and_the_clock_does_not_count_as_a_change() {
        let input = |env: &str| EnvInput {
            env: env.into(),
            strict: false,
            version: 0,
            state: EnvState::default(),
            needs_attention: None,
            releases: BTreeMap::new(),
            sdks: Vec::new(),
        };
        let a = assemble(vec![input("prod"), input("dev")], replicas());
        assert_eq!(a.envs[0].env, "dev");
        let mut later = replicas();
        later.now_ms = 99;
        let b = assemble(vec![input("dev"), input("prod")], later);
        assert_ne!(a, b);
        assert_eq!(a.without_clock(), b.without_clock());
    }
}
