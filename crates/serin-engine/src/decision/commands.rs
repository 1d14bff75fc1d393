//! Pure state transitions of an env's control state. Each command either yields the next
//! [`EnvState`] or says, in a sentence naming what it concerns, why it cannot apply.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::flags::{FlagError, MAX_FLAGS, MAX_LIST_VALUES, validate_flag};
use super::model::{
    AgentRouting, AgentState, BundleRef, EnvState, Flag, Kill, ReleaseRouting, Snapshot,
};
use crate::bundle::Bundle;
use crate::slug::{self, SlugError};

/// How many stables an agent's deploy stack keeps; deploying more drops the oldest.
pub const MAX_STACK: usize = 50;

/// One change to an env's control state.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Make `bundle` the agent's stable (push it onto the deploy stack).
    Deploy {
        agent: String,
        bundle: BundleRef,
    },
    /// Drain the release in progress if there is one; otherwise restore the previous stable.
    Rollback {
        agent: String,
    },
    /// Switch the agent off, for everyone or for one tenant.
    Kill {
        agent: String,
        tenant: Option<String>,
        kill: Kill,
    },
    /// Undo a [`Command::Kill`] of the same scope.
    Unkill {
        agent: String,
        tenant: Option<String>,
    },
    /// Create or replace a flag.
    SetFlag(Flag),
    DeleteFlag {
        key: String,
    },
    /// Start, reweigh or end (`None`) a release; used by the release controller.
    SetRelease {
        agent: String,
        release: Option<ReleaseRouting>,
    },
}

impl Command {
    /// The audit action.
    pub fn action(&self) -> &'static str {
        match self {
            Command::Deploy { .. } => "deploy",
            Command::Rollback { .. } => "rollback",
            Command::Kill { .. } => "kill",
            Command::Unkill { .. } => "unkill",
            Command::SetFlag(_) => "flag.set",
            Command::DeleteFlag { .. } => "flag.delete",
            Command::SetRelease { .. } => "release.set",
        }
    }

    /// The audit subject: the agent (`support`, or `support tenant=acme` for a tenant kill),
    /// or the flag key.
    pub fn subject(&self) -> String {
        match self {
            Command::Deploy { agent, .. }
            | Command::Rollback { agent }
            | Command::SetRelease { agent, .. }
            | Command::Kill {
                agent,
                tenant: None,
                ..
            }
            | Command::Unkill {
                agent,
                tenant: None,
            } => agent.clone(),
            Command::Kill {
                agent,
                tenant: Some(t),
                ..
            }
            | Command::Unkill {
                agent,
                tenant: Some(t),
            } => format!("{agent} tenant={t}"),
            Command::SetFlag(flag) => flag.key.clone(),
            Command::DeleteFlag { key } => key.clone(),
        }
    }
}

fn scope(tenant: Option<&String>) -> String {
    match tenant {
        Some(t) => format!(" for tenant {t}"),
        None => String::new(),
    }
}

/// Why a command does not apply. Every message is a sentence naming what it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    InvalidAgent(SlugError),
    ForeignBundle {
        agent: String,
        bundle: String,
    },
    AlreadyStable {
        agent: String,
        bundle: String,
    },
    ReleaseInProgress {
        agent: String,
        release: String,
    },
    NothingToRollBackTo {
        agent: String,
    },
    AlreadyKilled {
        agent: String,
        tenant: Option<String>,
    },
    NotKilled {
        agent: String,
        tenant: Option<String>,
    },
    InvalidFlag(FlagError),
    UnknownFlag {
        key: String,
    },
    /// The agent is not routed in this env (nothing deployed, nothing killed).
    UnknownAgent {
        agent: String,
        nearest: Option<String>,
    },
    TooManyFlags {
        key: String,
    },
    TooManyKilledTenants {
        agent: String,
    },
    NoStable {
        agent: String,
    },
    CandidateIsStable {
        agent: String,
        release: String,
        bundle: String,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::InvalidAgent(e) => write!(f, "{e}."),
            CommandError::ForeignBundle { agent, bundle } => {
                write!(f, "Bundle {bundle} belongs to another agent than {agent}.")
            }
            CommandError::AlreadyStable { agent, bundle } => {
                write!(f, "{bundle} is already the stable of {agent} in this env.")
            }
            CommandError::ReleaseInProgress { agent, release } => write!(
                f,
                "{agent} has release {release} in progress in this env; finish or roll it back before deploying."
            ),
            CommandError::NothingToRollBackTo { agent } => {
                write!(
                    f,
                    "{agent} has no previous stable to roll back to in this env."
                )
            }
            CommandError::AlreadyKilled { agent, tenant } => write!(
                f,
                "{agent} is already killed{} in this env.",
                scope(tenant.as_ref())
            ),
            CommandError::NotKilled { agent, tenant } => {
                write!(
                    f,
                    "{agent} is not killed{} in this env.",
                    scope(tenant.as_ref())
                )
            }
            CommandError::InvalidFlag(e) => write!(f, "{e}"),
            CommandError::UnknownFlag { key } => {
                write!(f, "Flag {key} does not exist in this env.")
            }
            CommandError::UnknownAgent { agent, nearest } => write!(
                f,
                "no agent {agent} in this env{}",
                suggestion(nearest.as_deref())
            ),
            CommandError::TooManyFlags { key } => write!(
                f,
                "This env already has {MAX_FLAGS} flags; delete one before adding {key}."
            ),
            CommandError::TooManyKilledTenants { agent } => write!(
                f,
                "{agent} is already killed for {MAX_KILLED_TENANTS} tenants in this env; kill the whole agent instead."
            ),
            CommandError::NoStable { agent } => write!(
                f,
                "{agent} has no stable in this env; deploy one before starting a release."
            ),
            CommandError::CandidateIsStable {
                agent,
                release,
                bundle,
            } => write!(
                f,
                "Release {release} of {agent} has the stable {bundle} as its candidate."
            ),
        }
    }
}

impl std::error::Error for CommandError {}

fn suggestion(nearest: Option<&str>) -> String {
    match nearest {
        Some(n) => format!("; did you mean {n}?"),
        None => "; deploy it here first".to_owned(),
    }
}

/// Most tenants one agent may be killed for, one by one, in one env.
pub const MAX_KILLED_TENANTS: usize = MAX_LIST_VALUES;

fn unknown_agent(st: &EnvState, agent: &str) -> CommandError {
    CommandError::UnknownAgent {
        agent: agent.to_owned(),
        nearest: slug::nearest(agent, st.agents.keys().map(String::as_str)).map(str::to_owned),
    }
}

fn check_agent(agent: &str) -> Result<(), CommandError> {
    slug::validate_agent(agent).map_err(CommandError::InvalidAgent)
}

fn check_owner(agent: &str, bundle: &BundleRef) -> Result<(), CommandError> {
    let owned = bundle
        .id
        .strip_prefix(agent)
        .and_then(|rest| rest.strip_prefix('@'))
        .is_some();
    if owned {
        Ok(())
    } else {
        Err(CommandError::ForeignBundle {
            agent: agent.to_owned(),
            bundle: bundle.id.clone(),
        })
    }
}

impl EnvState {
    /// The state after `cmd`, or why `cmd` does not apply (the state is unchanged either way).
    pub fn apply(&self, cmd: &Command) -> Result<EnvState, CommandError> {
        let mut next = self.clone();
        match cmd {
            Command::Deploy { agent, bundle } => {
                check_agent(agent)?;
                check_owner(agent, bundle)?;
                let state = next.agents.entry(agent.clone()).or_default();
                if let Some(r) = &state.release {
                    return Err(CommandError::ReleaseInProgress {
                        agent: agent.clone(),
                        release: r.id.clone(),
                    });
                }
                if state.stack.last() == Some(bundle) {
                    return Err(CommandError::AlreadyStable {
                        agent: agent.clone(),
                        bundle: bundle.id.clone(),
                    });
                }
                state.stack.push(bundle.clone());
                if state.stack.len() > MAX_STACK {
                    let excess = state.stack.len() - MAX_STACK;
                    state.stack.drain(..excess);
                }
            }
            Command::Rollback { agent } => {
                let nothing = || CommandError::NothingToRollBackTo {
                    agent: agent.clone(),
                };
                let state = match next.agents.get_mut(agent) {
                    Some(s) => s,
                    None => return Err(unknown_agent(self, agent)),
                };
                if state.release.take().is_none() {
                    if state.stack.len() < 2 {
                        return Err(nothing());
                    }
                    state.stack.pop();
                }
            }
            Command::Kill {
                agent,
                tenant,
                kill,
            } => {
                check_agent(agent)?;
                // Killing a name that routes nothing here would only hide a typo: the agent
                // meant keeps serving while the operator reads KILLED.
                let state = match next.agents.get_mut(agent) {
                    Some(s) => s,
                    None => return Err(unknown_agent(self, agent)),
                };
                if let Some(t) = tenant
                    && !state.killed_tenants.contains_key(t)
                    && state.killed_tenants.len() >= MAX_KILLED_TENANTS
                {
                    return Err(CommandError::TooManyKilledTenants {
                        agent: agent.clone(),
                    });
                }
                let already = match tenant {
                    None => state.kill.replace(kill.clone()).is_some(),
                    Some(t) => state
                        .killed_tenants
                        .insert(t.clone(), kill.clone())
                        .is_some(),
                };
                if already {
                    return Err(CommandError::AlreadyKilled {
                        agent: agent.clone(),
                        tenant: tenant.clone(),
                    });
                }
            }
            Command::Unkill { agent, tenant } => {
                let not_killed = || CommandError::NotKilled {
                    agent: agent.clone(),
                    tenant: tenant.clone(),
                };
                let state = match next.agents.get_mut(agent) {
                    Some(s) => s,
                    None => return Err(unknown_agent(self, agent)),
                };
                let was = match tenant {
                    None => state.kill.take().is_some(),
                    Some(t) => state.killed_tenants.remove(t).is_some(),
                };
                if !was {
                    return Err(not_killed());
                }
                if *state == AgentState::default() {
                    next.agents.remove(agent);
                }
            }
            Command::SetFlag(flag) => {
                validate_flag(flag).map_err(CommandError::InvalidFlag)?;
                if !next.flags.contains_key(&flag.key) && next.flags.len() >= MAX_FLAGS {
                    return Err(CommandError::TooManyFlags {
                        key: flag.key.clone(),
                    });
                }
                next.flags.insert(flag.key.clone(), flag.clone());
            }
            Command::DeleteFlag { key } => {
                if next.flags.remove(key).is_none() {
                    return Err(CommandError::UnknownFlag { key: key.clone() });
                }
            }
            Command::SetRelease { agent, release } => {
                let no_stable = || CommandError::NoStable {
                    agent: agent.clone(),
                };
                let state = next.agents.get_mut(agent).ok_or_else(no_stable)?;
                let stable = state.stack.last().ok_or_else(no_stable)?;
                if let Some(r) = release {
                    check_owner(agent, &r.candidate)?;
                    if r.candidate == *stable {
                        return Err(CommandError::CandidateIsStable {
                            agent: agent.clone(),
                            release: r.id.clone(),
                            bundle: stable.id.clone(),
                        });
                    }
                }
                state.release = release.clone();
            }
        }
        Ok(next)
    }

    /// What SDKs need to route each agent: the top two stack entries, the release, kills.
    pub fn routing(&self) -> BTreeMap<String, AgentRouting> {
        self.agents
            .iter()
            .map(|(name, s)| {
                let mut top = s.stack.iter().rev();
                let stable = top.next().cloned();
                let previous = top.next().cloned();
                let routing = AgentRouting {
                    stable,
                    previous,
                    release: s.release.clone(),
                    killed: s.kill.is_some(),
                    killed_tenants: s.killed_tenants.keys().cloned().collect(),
                };
                (name.clone(), routing)
            })
            .collect()
    }

    /// Ids of every bundle the routing references: stables, previous stables, candidates.
    pub fn referenced_bundles(&self) -> BTreeSet<String> {
        self.routing()
            .into_values()
            .flat_map(|r| [r.stable, r.previous, r.release.map(|r| r.candidate)])
            .flatten()
            .map(|b| b.id)
            .collect()
    }

    /// The snapshot SDKs receive for this state. `bundles` should hold (at least) every id of
    /// [`EnvState::referenced_bundles`].
    pub fn snapshot(
        &self,
        env: &str,
        version: u64,
        published_at_ms: i64,
        bundles: BTreeMap<String, Bundle>,
    ) -> Snapshot {
        Snapshot {
            env: env.to_owned(),
            version,
            published_at_ms,
            agents: self.routing(),
            flags: self.flags.clone(),
            bundles,
        }
    }
}
