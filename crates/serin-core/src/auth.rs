//! The role model: which token role may perform which action.
//!
//! Pure data; the server maps each route to an [`Action`] and asks [`Role::allows`].
//!
//! | action \ role   | admin | deployer | approver | viewer | sdk |
//! |-----------------|:-----:|:--------:|:--------:|:------:|:---:|
//! | `read`          |   ✓   |    ✓     |    ✓     |   ✓    |     |
//! | `bundle_write`  |   ✓   |    ✓     |          |        |     |
//! | `deploy`        |   ✓   |    ✓     |          |        |     |
//! | `approve`       |   ✓   |          |    ✓     |        |     |
//! | `snapshot_read` |   ✓   |    ✓     |    ✓     |   ✓    |  ✓  |
//! | `decide`        |   ✓   |          |          |        |  ✓  |
//! | `outcome_write` |   ✓   |          |          |        |  ✓  |
//! | `effect_write`  |   ✓   |    ✓     |          |        |  ✓  |
//! | `admin`         |   ✓   |          |          |        |     |
//!
//! SDK tokens are deliberately not readers: they ship inside agent processes and should only
//! reach the SDK-facing endpoints.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The role a token carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including token management.
    Admin,
    /// Push bundles, deploy and run releases.
    Deployer,
    /// Approve gated steps.
    Approver,
    /// Read-only access to the control plane.
    Viewer,
    /// What an agent process needs: snapshots, decisions and outcome reports.
    Sdk,
}

/// Something a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read control-plane state (bundles, releases, audit log, ...).
    Read,
    /// Push a bundle.
    BundleWrite,
    /// Deploy, roll back, start/promote/abort a release, kill switches, flags.
    Deploy,
    /// Approve a manual promotion or readiness override.
    Approve,
    /// Record readiness evidence or an offline eval result (people who own an item attest
    /// it; deployers and approvers both do).
    Attest,
    /// Read an env snapshot (poll or stream).
    SnapshotRead,
    /// Ask the server to make a decision (`POST /v1/decide`).
    Decide,
    /// Report outcome events (`POST /v1/outcomes`).
    OutcomeWrite,
    /// Record side-effect intents and results in the ledger (`POST /v1/effects`): agents do,
    /// and so do deployers running an agent's tools by hand.
    EffectWrite,
    /// Token and server administration.
    Admin,
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected one of admin, deployer, approver, viewer, sdk")]
pub struct UnknownRole(pub String);

impl Role {
    /// Every role, strongest first.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Deployer,
        Role::Approver,
        Role::Viewer,
        Role::Sdk,
    ];

    /// The lowercase name used in tokens, config and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Viewer => "viewer",
            Role::Sdk => "sdk",
        }
    }

    /// Parses a lowercase role name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a token with this role may perform `action`.
    pub fn allows(self, action: Action) -> bool {
        use Action as A;
        match self {
            Role::Admin => true,
            Role::Deployer => matches!(
                action,
                A::Read | A::BundleWrite | A::Deploy | A::Attest | A::SnapshotRead | A::EffectWrite
            ),
            Role::Approver => matches!(action, A::Read | A::Approve | A::Attest | A::SnapshotRead),
            Role::Viewer => matches!(action, A::Read | A::SnapshotRead),
            Role::Sdk => matches!(
                action,
                A::SnapshotRead | A::Decide | A::OutcomeWrite | A::EffectWrite
            ),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 10] = [
        Action::Read,
        Action::BundleWrite,
        Action::Deploy,
        Action::Approve,
        Action::Attest,
        Action::SnapshotRead,
        Action::Decide,
        Action::OutcomeWrite,
        Action::EffectWrite,
        Action::Admin,
    ];

    /// A snake_case name for messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::BundleWrite => "bundle_write",
            Action::Deploy => "deploy",
            Action::Approve => "approve",
            Action::Attest => "attest",
            Action::SnapshotRead => "snapshot_read",
            Action::Decide => "decide",
            Action::OutcomeWrite => "outcome_write",
            Action::EffectWrite => "effect_write",
            Action::Admin => "admin",
        }
    }

    /// The weakest role allowing this action, for docs and "needs role X" errors.
    ///
    /// Roles are not a strict hierarchy (an sdk token may decide but not read), so this picks
    /// the role a human would be told to ask for: viewer, then the specialised roles, then admin.
    pub fn least_role(self) -> Role {
        const WEAKEST_FIRST: [Role; 5] = [
            Role::Viewer,
            Role::Sdk,
            Role::Approver,
            Role::Deployer,
            Role::Admin,
        ];
        WEAKEST_FIRST
            .into_iter()
            .find(|r| r.allows(self))
            .unwrap_or(Role::Admin)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (role, action) pair, spelled out so a change to the rules shows up here.
    #[test]
    fn every_role_action_pair_matches_the_table() {
        use Action as A;
        #[rustfmt::skip]
        let table: [(A, [bool; 5]); 10] = [
            //                 admin  deployer approver viewer sdk
            (A::Read,         [true,  true,    true,    true,  false]),
            (A::BundleWrite,  [true,  true,    false,   false, false]),
            (A::Deploy,       [true,  true,    false,   false, false]),
            (A::Approve,      [true,  false,   true,    false, false]),
            (A::Attest,       [true,  true,    true,    false, false]),
            (A::SnapshotRead, [true,  true,    true,    true,  true ]),
            (A::Decide,       [true,  false,   false,   false, true ]),
            (A::OutcomeWrite, [true,  false,   false,   false, true ]),
            (A::EffectWrite,  [true,  true,    false,   false, true ]),
            (A::Admin,        [true,  false,   false,   false, false]),
        ];
        assert_eq!(table.len(), Action::ALL.len());
        for (action, expected) in table {
            for (role, want) in Role::ALL.into_iter().zip(expected) {
                assert_eq!(role.allows(action), want, "{role} {action}");
            }
        }
    }

    #[test]
    fn least_role_is_the_weakest_role_that_allows_the_action() {
        let got: Vec<_> = Action::ALL
            .into_iter()
            .map(|a| (a.as_str(), a.least_role().as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("read", "viewer"),
                ("bundle_write", "deployer"),
                ("deploy", "deployer"),
                ("approve", "approver"),
                ("attest", "approver"),
                ("snapshot_read", "viewer"),
                ("decide", "sdk"),
                ("outcome_write", "sdk"),
                ("effect_write", "sdk"),
                ("admin", "admin"),
            ]
        );
    }

    #[test]
    fn roles_round_trip_through_strings_and_serde() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
        }
        let err = "root".parse::<Role>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown role "root": expected one of admin, deployer, approver, viewer, sdk"#
        );
        assert_eq!(Role::parse("Admin"), None);
    }
}
