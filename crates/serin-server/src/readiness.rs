//! Readiness gates on the server: versioned policies, attested evidence, offline eval
//! records, and the facts Serin computes from its own state (pins, rollback target, drills,
//! the plan, evals, trace coverage). [`Readiness::check`] is what `serin readiness check`
//! shows and what `release start` refuses on.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serin_core::bundle::Bundle;
use serin_core::catalog::{ModelCatalog, ModelStatus};
use serin_core::decision::EnvState;
use serin_core::guardrails::ArmAggregate;
use serin_core::readiness::{
    EvalResult, Evidence, EvidenceStatus, Facts, ItemResult, Policy, Report,
    TRACE_COVERAGE_WINDOW_DAYS, computed_item, evaluate, parse_expiry,
};
use serin_core::release::Plan;
use serin_store::{EvalRow, PolicyRow, Store, StoredBundle};
use utoipa::ToSchema;

use crate::clock;
use crate::drills::DrillRecord;
use crate::error::{ApiError, ErrorCode};
use crate::hub;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Longest eval set name.
pub const MAX_SET_CHARS: usize = 128;

/// A policy version as stored.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PolicyView {
    pub env: String,
    pub agent: String,
    pub version: i64,
    pub applied_at_ms: i64,
    pub applied_by: String,
    /// False when the applied policy was identical to the current one (no new version).
    pub changed: bool,
    #[schema(value_type = Object)]
    pub policy: Value,
}

impl PolicyView {
    fn from_row(row: PolicyRow, changed: bool) -> Result<PolicyView, ApiError> {
        let policy = serde_json::from_str(&row.policy).map_err(ApiError::internal)?;
        Ok(PolicyView {
            env: row.env,
            agent: row.agent,
            version: row.version,
            applied_at_ms: row.applied_at_ms,
            applied_by: row.applied_by,
            changed,
            policy,
        })
    }
}

/// The readiness of one candidate bundle in one env.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckView {
    pub agent: String,
    pub env: String,
    /// `agent@N` of the candidate.
    pub bundle: String,
    pub digest: String,
    /// `None`: no policy is applied, so nothing is required.
    pub policy_version: Option<i64>,
    /// Whether a plan was given (plan items are `missing` without one).
    pub plan_attached: bool,
    pub evaluated_at_ms: i64,
    pub ready: bool,
    pub verdict: String,
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<ItemResult>,
    pub blocked_by: Vec<String>,
}

impl CheckView {
    /// The report the view was made from.
    pub fn report(&self) -> Report {
        Report {
            ready: self.ready,
            verdict: self.verdict.clone(),
            items: self.items.clone(),
            blocked_by: self.blocked_by.clone(),
        }
    }
}

/// A body of `PUT .../readiness/evidence/{key}` (the key is in the path).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRequest {
    /// `pass`, `fail`, `partial` or `n/a`.
    pub status: String,
    /// Who owns the item (a person or a team). Required.
    pub owner: String,
    /// Evidence text or a link.
    pub evidence: Option<String>,
    pub next_action: Option<String>,
    /// How long the evidence holds, e.g. `7d`, `12h`, `30m` (at most 365d).
    pub expires: Option<String>,
}

/// A body of `POST .../bundles/{n}/evals`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    /// The eval set's name, e.g. `golden-v3`.
    pub set: String,
    pub score: f64,
    /// The score the set must reach; the eval passes at `score >= threshold`.
    pub threshold: f64,
    /// The digest the eval ran on; refused when it is not this bundle's.
    pub digest: Option<String>,
    /// A link to the eval run or a note.
    pub evidence: Option<String>,
}

/// One recorded offline eval.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EvalView {
    pub id: i64,
    /// `agent@N`.
    pub bundle: String,
    pub digest: String,
    pub set: String,
    pub score: f64,
    pub threshold: f64,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    pub recorded_at_ms: i64,
    pub recorded_by: String,
}

/// What the `record` column of `eval_records` holds.
#[derive(Serialize, Deserialize)]
struct EvalRecordJson {
    set: String,
    score: f64,
    threshold: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    evidence: Option<String>,
}

fn eval_view(row: &EvalRow) -> Result<EvalView, ApiError> {
    let r: EvalRecordJson = serde_json::from_str(&row.record).map_err(ApiError::internal)?;
    Ok(EvalView {
        id: row.id,
        bundle: format!("{}@{}", row.agent, row.bundle),
        digest: row.digest.clone(),
        passed: r.score >= r.threshold,
        set: r.set,
        score: r.score,
        threshold: r.threshold,
        evidence: r.evidence,
        recorded_at_ms: row.recorded_at_ms,
        recorded_by: row.recorded_by.clone(),
    })
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(ErrorCode::InvalidField, field, message)
}

fn number(bundle: u64) -> Result<i64, ApiError> {
    i64::try_from(bundle)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| invalid("/bundle", "bundle must be a positive integer"))
}

#[derive(Debug)]
pub struct Readiness {
    store: Store,
    catalog: Arc<ModelCatalog>,
}

impl Readiness {
    pub fn new(store: Store, catalog: Arc<ModelCatalog>) -> Readiness {
        Readiness { store, catalog }
    }

    /// Stores `policy` (already validated) as the agent's next version in `env`.
    pub async fn apply(
        &self,
        env: &str,
        agent: &str,
        policy: &Policy,
        actor: &str,
    ) -> Result<PolicyView, ApiError> {
        let text = serde_json::to_string(policy).map_err(ApiError::internal)?;
        let (row, changed) = self
            .store
            .apply_policy(env, agent, &text, clock::now_ms(), actor)
            .await?;
        PolicyView::from_row(row, changed)
    }

    async fn current_policy(
        &self,
        env: &str,
        agent: &str,
    ) -> Result<Option<(i64, Policy)>, ApiError> {
        match self.store.current_policy(env, agent).await? {
            Some(row) => {
                let p: Policy = serde_json::from_str(&row.policy).map_err(ApiError::internal)?;
                Ok(Some((row.version, p)))
            }
            None => Ok(None),
        }
    }

    /// The current policy, or version `version`.
    pub async fn policy(
        &self,
        env: &str,
        agent: &str,
        version: Option<i64>,
    ) -> Result<PolicyView, ApiError> {
        let row = match version {
            Some(v) => self.store.policy_at(env, agent, v).await?,
            None => self.store.current_policy(env, agent).await?,
        };
        let row = row.ok_or_else(|| match version {
            Some(v) => ApiError::not_found(format!(
                "{agent} has no readiness policy version {v} in {env}"
            )),
            None => ApiError::not_found(format!(
                "no readiness policy is applied to {agent} in {env} (serin readiness apply)"
            )),
        })?;
        PolicyView::from_row(row, true)
    }

    /// Every version, newest first.
    pub async fn history(&self, env: &str, agent: &str) -> Result<Vec<PolicyView>, ApiError> {
        self.store
            .policy_history(env, agent, serin_store::MAX_PAGE)
            .await?
            .into_iter()
            .map(|r| PolicyView::from_row(r, true))
            .collect()
    }

    /// Records evidence for `key`. The key must be an attested item the agent's policy (or,
    /// without one, the template catalog) knows: computed items come from Serin's state only.
    pub async fn set_evidence(
        &self,
        env: &str,
        agent: &str,
        key: &str,
        req: EvidenceRequest,
        actor: &str,
    ) -> Result<Evidence, ApiError> {
        let status = EvidenceStatus::parse(&req.status).ok_or_else(|| {
            invalid(
                "/status",
                format!(
                    "status {:?} is not one of pass, fail, partial, n/a",
                    req.status
                ),
            )
        })?;
        let policy = self.current_policy(env, agent).await?;
        if computed_item(key).is_some() {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "key",
                format!(
                    "{key:?} is computed from Serin's own state; it takes no evidence (serin readiness check shows how it is computed)"
                ),
            ));
        }
        let known = match &policy {
            Some((_, p)) => p.knows(key),
            None => Policy::default().knows(key),
        };
        if !known {
            let whose = match &policy {
                Some((v, _)) => format!("the readiness policy of {agent} in {env} (version {v})"),
                None => "the template catalog (no policy is applied yet)".to_owned(),
            };
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "key",
                format!(
                    "{key:?} is not an item of {whose}; add it under `items` in the policy first"
                ),
            ));
        }
        let now = clock::now_ms();
        let expires_at_ms = match &req.expires {
            Some(text) => {
                let ms = parse_expiry(text).map_err(|e| invalid("/expires", e.to_string()))?;
                Some(now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
            }
            None => None,
        };
        let evidence = Evidence {
            key: key.to_owned(),
            status,
            owner: req.owner,
            evidence: req.evidence,
            next_action: req.next_action,
            recorded_at_ms: now,
            recorded_by: actor.to_owned(),
            expires_at_ms,
        };
        evidence.validate().map_err(|e| {
            let field = if e.field == "key" {
                "key".to_owned()
            } else if e.field == "expires_at_ms" {
                "/expires".to_owned()
            } else {
                format!("/{}", e.field)
            };
            invalid(&field, e.to_string())
        })?;
        let record = serde_json::to_string(&evidence).map_err(ApiError::internal)?;
        let details = serde_json::to_value(&evidence).map_err(ApiError::internal)?;
        self.store
            .add_evidence(env, agent, key, &record, now, actor, details)
            .await?;
        Ok(evidence)
    }

    /// The newest evidence per key.
    pub async fn evidence(&self, env: &str, agent: &str) -> Result<Vec<Evidence>, ApiError> {
        self.store
            .current_evidence(env, agent)
            .await?
            .iter()
            .map(|r| serde_json::from_str(&r.record).map_err(ApiError::internal))
            .collect()
    }

    /// Every record of `key`, newest first.
    pub async fn evidence_history(
        &self,
        env: &str,
        agent: &str,
        key: &str,
    ) -> Result<Vec<Evidence>, ApiError> {
        self.store
            .evidence_history(env, agent, key, serin_store::MAX_PAGE)
            .await?
            .iter()
            .map(|r| serde_json::from_str(&r.record).map_err(ApiError::internal))
            .collect()
    }

    /// Records an offline eval of `agent@bundle`, tied to its digest.
    pub async fn record_eval(
        &self,
        agent: &str,
        bundle: u64,
        req: EvalRequest,
        actor: &str,
    ) -> Result<EvalView, ApiError> {
        let n = number(bundle)?;
        let set = req.set.trim();
        if set.is_empty()
            || set != req.set
            || set.chars().count() > MAX_SET_CHARS
            || !set
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'))
        {
            return Err(invalid(
                "/set",
                format!(
                    "set must be 1 to {MAX_SET_CHARS} characters of letters, digits, . _ - : /"
                ),
            ));
        }
        if !req.score.is_finite() {
            return Err(invalid("/score", "score must be a finite number"));
        }
        if !req.threshold.is_finite() {
            return Err(invalid("/threshold", "threshold must be a finite number"));
        }
        if let Some(e) = &req.evidence
            && (e.trim().is_empty() || e.chars().count() > serin_core::readiness::MAX_TEXT_CHARS)
        {
            return Err(invalid(
                "/evidence",
                "evidence must be 1 to 4096 characters when present",
            ));
        }
        let stored = self
            .store
            .get_bundle(agent, n)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no bundle {agent}@{n}")))?;
        if let Some(d) = &req.digest
            && *d != stored.digest
        {
            return Err(ApiError::field(
                ErrorCode::Conflict,
                "/digest",
                format!(
                    "the eval ran on {d}, but {agent}@{n} is {}; rerun it on this bundle",
                    stored.digest
                ),
            ));
        }
        let record = EvalRecordJson {
            set: set.to_owned(),
            score: req.score,
            threshold: req.threshold,
            evidence: req.evidence,
        };
        let text = serde_json::to_string(&record).map_err(ApiError::internal)?;
        let details = json!({
            "bundle": format!("{agent}@{n}"), "digest": stored.digest, "set": record.set,
            "score": record.score, "threshold": record.threshold,
            "passed": record.score >= record.threshold,
        });
        let row = self
            .store
            .add_eval(
                agent,
                n,
                &stored.digest,
                set,
                &text,
                clock::now_ms(),
                actor,
                details,
            )
            .await?;
        eval_view(&row)
    }

    /// Recorded evals of `agent@bundle`, newest first.
    pub async fn evals(&self, agent: &str, bundle: u64) -> Result<Vec<EvalView>, ApiError> {
        let n = number(bundle)?;
        self.store
            .evals(agent, n)
            .await?
            .iter()
            .map(eval_view)
            .collect()
    }

    /// Evaluates the agent's policy in `env` for candidate `agent@bundle`, with `plan` when
    /// the caller has one (release start always does).
    pub async fn check(
        &self,
        env: &str,
        agent: &str,
        bundle: u64,
        plan: Option<&Plan>,
    ) -> Result<CheckView, ApiError> {
        let n = number(bundle)?;
        let stored = self
            .store
            .get_bundle(agent, n)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no bundle {agent}@{n}")))?;
        let now = clock::now_ms();
        let policy = self.current_policy(env, agent).await?;
        let (version, report) = match &policy {
            None => (
                None,
                Report {
                    ready: true,
                    verdict: format!(
                        "ready: no readiness policy is applied to {agent} in {env}, so nothing is required (serin readiness apply)"
                    ),
                    items: Vec::new(),
                    blocked_by: Vec::new(),
                },
            ),
            Some((v, p)) => {
                let facts = self.facts(env, agent, &stored, plan, p, now).await?;
                let evidence = self.evidence(env, agent).await?;
                (Some(*v), evaluate(p, &evidence, &facts))
            }
        };
        Ok(CheckView {
            agent: agent.to_owned(),
            env: env.to_owned(),
            bundle: format!("{agent}@{n}"),
            digest: stored.digest,
            policy_version: version,
            plan_attached: plan.is_some(),
            evaluated_at_ms: now,
            ready: report.ready,
            verdict: report.verdict,
            items: report.items,
            blocked_by: report.blocked_by,
        })
    }

    /// Gathers what Serin knows about the candidate from its own state.
    async fn facts(
        &self,
        env: &str,
        agent: &str,
        stored: &StoredBundle,
        plan: Option<&Plan>,
        policy: &Policy,
        now: i64,
    ) -> Result<Facts, ApiError> {
        let mut facts = Facts {
            now_ms: now,
            ..Facts::default()
        };
        let candidate_id = format!("{agent}@{}", stored.number);
        let bundle = Bundle::from_canonical_json(&stored.content).map_err(ApiError::internal)?;
        facts.candidate_alias = Some(bundle.model.snapshot.clone());
        facts.candidate_pinned = Some(!matches!(
            self.catalog
                .classify(&bundle.model.provider, &bundle.model.snapshot),
            ModelStatus::Alias { .. }
        ));

        // The rollback target is whatever stable the candidate would replace; SDKs keep the
        // top two stack entries warm, so it needs no fetch.
        if let Some(state) = self.store.latest_env_state(env).await? {
            let state: EnvState = hub::parse_state(&state)?;
            if let Some(r) = state.routing().get(agent) {
                facts.previous_stable = match &r.stable {
                    Some(s) if s.id != candidate_id => Some(s.id.clone()),
                    _ => r
                        .previous
                        .as_ref()
                        .filter(|p| p.id != candidate_id)
                        .map(|p| p.id.clone()),
                };
            }
        }

        for row in self.store.list_drills(env, agent, 100).await? {
            let Ok(d) = serde_json::from_str::<DrillRecord>(&row.state) else {
                continue;
            };
            if d.succeeded() {
                facts.last_successful_drill_ms = d.finished_ms;
                break;
            }
        }

        if let Some(plan) = plan {
            facts.set_plan(plan);
        }

        let evals = self.store.evals(agent, stored.number).await?;
        let wanted_set = bundle.eval_set.as_deref();
        let chosen = evals.iter().find_map(|row| {
            let r: EvalRecordJson = serde_json::from_str(&row.record).ok()?;
            if wanted_set.is_some_and(|w| w != r.set) {
                return None;
            }
            Some(EvalResult {
                set: r.set,
                score: r.score,
                threshold: r.threshold,
                digest_matches: row.digest == stored.digest,
            })
        });
        facts.eval_result = chosen;

        let since = now.saturating_sub(i64::from(TRACE_COVERAGE_WINDOW_DAYS) * DAY_MS);
        let mut traced = 0u64;
        let mut total = 0u64;
        for row in self
            .store
            .rollups(&policy.settings.trace_coverage_env, agent, since)
            .await?
        {
            if row.bundle != candidate_id {
                continue;
            }
            let Ok(agg) = serde_json::from_str::<ArmAggregate>(&row.data) else {
                continue;
            };
            traced = traced.saturating_add(agg.traced);
            total = total.saturating_add(agg.requests);
        }
        if total > 0 {
            facts.trace_coverage = Some((traced, total));
        }
        Ok(facts)
    }
}
