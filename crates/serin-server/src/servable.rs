//! The check every routing and flag change runs inside its store transaction, before commit:
//! the new state must build, encode, parse back and compile exactly as the hub and the SDKs
//! will. A change that fails is refused with 422 and nothing is written, so a committed state
//! can always be served (no 5xx after a write, no env bricked by one request).

use std::collections::{BTreeMap, BTreeSet};

use serin_core::bundle::Bundle;
use serin_core::decision::{EnvState, ServeError, servable, validate_flag};

use crate::error::{ApiError, ErrorCode};
use crate::hub::Hub;

/// Why a change closure refused to commit.
#[derive(Debug)]
pub enum Refusal {
    /// Refused for good; answer this.
    Api(ApiError),
    /// The state references bundles the caller did not load; load them and run again.
    NeedBundles(BTreeSet<String>),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal::Api(e)
    }
}

impl Refusal {
    /// For callers that cannot run again: a missing bundle means the env changed under them.
    pub fn into_api(self) -> ApiError {
        match self {
            Refusal::Api(e) => e,
            Refusal::NeedBundles(ids) => ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "the env changed while this change was prepared (it now references {}); retry",
                    ids.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ),
        }
    }
}

/// The bundles the env's published snapshot already carries (none for an env that cannot be
/// loaded): the cheapest set that usually covers the next state; callers add the bundle their
/// change introduces.
pub async fn known_bundles(hub: &Hub, env: &str) -> BTreeMap<String, Bundle> {
    match hub.current(env).await {
        Ok(p) => p.compiled.snapshot().bundles.clone(),
        Err(_) => BTreeMap::new(),
    }
}

/// Loads `ids` into `bundles`.
pub async fn load_into(
    hub: &Hub,
    bundles: &mut BTreeMap<String, Bundle>,
    ids: &BTreeSet<String>,
) -> Result<(), ApiError> {
    let missing: BTreeSet<String> = ids
        .iter()
        .filter(|id| !bundles.contains_key(*id))
        .cloned()
        .collect();
    bundles.extend(hub.load_bundles(&missing).await?);
    Ok(())
}

/// Checks that `next` can be served in `env`. `field` is the request field a failure is
/// blamed on when no stored flag is at fault (`/flag` for a flag write).
pub fn check(
    env: &str,
    next: &EnvState,
    bundles: &BTreeMap<String, Bundle>,
    field: &str,
) -> Result<(), Refusal> {
    let referenced = next.referenced_bundles();
    let missing: BTreeSet<String> = referenced
        .iter()
        .filter(|id| !bundles.contains_key(*id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Refusal::NeedBundles(missing));
    }
    let carried: BTreeMap<String, Bundle> = referenced
        .into_iter()
        .filter_map(|id| bundles.get(&id).map(|b| (id, b.clone())))
        .collect();
    // The longest version a state can get, so the encoded size checked is never smaller than
    // the published one.
    match servable(next, env, u64::MAX, i64::MAX, carried) {
        Ok(_) => Ok(()),
        Err(e) => Err(Refusal::Api(blame(next, &e, field))),
    }
}

/// 422 naming the stored flag that cannot be served if there is one (an older store may hold
/// one), else `field`.
fn blame(next: &EnvState, e: &ServeError, field: &str) -> ApiError {
    tracing::warn!(error = %e, "refused a change whose snapshot could not be served");
    if field != "/flag"
        && let Some((key, fe)) = next
            .flags
            .iter()
            .find_map(|(k, f)| validate_flag(f).err().map(|fe| (k, fe)))
    {
        return ApiError::field(
            ErrorCode::InvalidField,
            format!("/flags/{key}{}", fe.pointer()),
            format!(
                "{} The env cannot be served with it; delete or fix flag {key} first.",
                fe.message()
            ),
        );
    }
    ApiError::field(
        ErrorCode::InvalidField,
        field,
        format!("{e}; the change was not applied"),
    )
}
