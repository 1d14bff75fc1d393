//! Validation of the user-chosen names that end up in URLs, file names and storage keys.
//!
//! Agent and env names are slugs `[a-z0-9][a-z0-9-]{0,62}`; flag keys additionally allow
//! `.` and `_` and may be up to 128 characters (`[a-z0-9][a-z0-9._-]{0,127}`), so every one
//! of them is safe in a URL path segment without escaping.
//!
//! SDK instance ids are chosen by the process that runs the SDK (a pod name, a
//! `pid-random` default), so they also allow upper case and `:`:
//! `[A-Za-z0-9._:-]{1,128}`, still safe in a query string without escaping.

/// What kind of name failed validation; used in the error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlugKind {
    /// An agent name.
    Agent,
    /// An environment name.
    Env,
    /// A flag key.
    FlagKey,
    /// An SDK instance id.
    Instance,
}

impl SlugKind {
    /// The noun used in messages (`agent name`, `env name`, `flag key`).
    pub fn as_str(self) -> &'static str {
        match self {
            SlugKind::Agent => "agent name",
            SlugKind::Env => "env name",
            SlugKind::FlagKey => "flag key",
            SlugKind::Instance => "SDK instance id",
        }
    }

    /// The pattern names of this kind must match, as shown to users.
    pub fn pattern(self) -> &'static str {
        match self {
            SlugKind::Agent | SlugKind::Env => "[a-z0-9][a-z0-9-]{0,62}",
            SlugKind::FlagKey => "[a-z0-9][a-z0-9._-]{0,127}",
            SlugKind::Instance => "[A-Za-z0-9._:-]{1,128}",
        }
    }

    fn max_len(self) -> usize {
        match self {
            SlugKind::Agent | SlugKind::Env => 63,
            SlugKind::FlagKey | SlugKind::Instance => 128,
        }
    }

    fn allows_inner(self, c: char) -> bool {
        match self {
            SlugKind::Agent | SlugKind::Env => {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
            }
            SlugKind::FlagKey => {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_')
            }
            SlugKind::Instance => c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'),
        }
    }

    fn allows_first(self, c: char) -> bool {
        match self {
            SlugKind::Agent | SlugKind::Env | SlugKind::FlagKey => {
                c.is_ascii_lowercase() || c.is_ascii_digit()
            }
            SlugKind::Instance => self.allows_inner(c),
        }
    }
}

/// A name that does not match its pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlugError {
    /// Which kind of name it was.
    pub kind: SlugKind,
    /// The rejected input, verbatim.
    pub value: String,
}

impl std::fmt::Display for SlugError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} is invalid: must match {}",
            self.kind.as_str(),
            self.value,
            self.kind.pattern()
        )
    }
}

impl std::error::Error for SlugError {}

fn check(kind: SlugKind, s: &str) -> Result<(), SlugError> {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| kind.allows_first(c));
    if first_ok && s.len() <= kind.max_len() && chars.all(|c| kind.allows_inner(c)) {
        Ok(())
    } else {
        Err(SlugError {
            kind,
            value: s.to_owned(),
        })
    }
}

/// Checks an agent name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn validate_agent(s: &str) -> Result<(), SlugError> {
    check(SlugKind::Agent, s)
}

/// Checks an env name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn validate_env(s: &str) -> Result<(), SlugError> {
    check(SlugKind::Env, s)
}

/// Checks a flag key: `[a-z0-9][a-z0-9._-]{0,127}`.
pub fn validate_flag_key(s: &str) -> Result<(), SlugError> {
    check(SlugKind::FlagKey, s)
}

/// Checks an SDK instance id: `[A-Za-z0-9._:-]{1,128}`.
pub fn validate_instance(s: &str) -> Result<(), SlugError> {
    check(SlugKind::Instance, s)
}

/// Edit distance (insertions, deletions, substitutions) between two names, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = i;
        let mut left = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let cost = diagonal + usize::from(ca != *cb);
            let next = cost.min(above + 1).min(left + 1);
            diagonal = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = next;
            }
            left = next;
        }
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
    }
    row.last().copied().unwrap_or(0)
}

/// The existing name nearest to a mistyped one, if it is close enough to be the one meant:
/// within a third of the longer name's length (at least 2 edits), ties broken by order.
pub fn nearest<'a>(name: &str, existing: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    existing
        .into_iter()
        .filter(|e| *e != name)
        .map(|e| (edit_distance(name, e), e))
        .filter(|(d, e)| *d <= (name.chars().count().max(e.chars().count()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

/// `no env prdo; did you mean prod?`, or `no env x; existing envs: dev, prod` when nothing is
/// close, or `no env x; there are none` when nothing exists. `kind` is the noun (`env`).
pub fn not_found_message<'a>(
    kind: &str,
    name: &str,
    existing: impl IntoIterator<Item = &'a str> + Clone,
) -> String {
    if let Some(n) = nearest(name, existing.clone()) {
        return format!("no {kind} {name}; did you mean {n}?");
    }
    let mut all: Vec<&str> = existing.into_iter().collect();
    all.sort_unstable();
    if all.is_empty() {
        return format!("no {kind} {name}; there are none yet");
    }
    let more = all.len().saturating_sub(10);
    all.truncate(10);
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("no {kind} {name}; existing: {}{tail}", all.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_suggests_the_nearest_existing_name_and_a_stranger_lists_them() {
        assert_eq!(edit_distance("prdo", "prod"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("suport", "support"), 1);
        assert_eq!(nearest("prdo", ["dev", "prod", "staging"]), Some("prod"));
        assert_eq!(nearest("suport", ["support", "billing"]), Some("support"));
        assert_eq!(nearest("zzzzzzzz", ["dev", "prod"]), None);
        assert_eq!(
            not_found_message("env", "prdo", ["dev", "prod"]),
            "no env prdo; did you mean prod?"
        );
        assert_eq!(
            not_found_message("env", "zzzzzzzz", ["prod", "dev"]),
            "no env zzzzzzzz; existing: dev, prod"
        );
        assert_eq!(
            not_found_message("agent", "x", std::iter::empty::<&str>()),
            "no agent x; there are none yet"
        );
    }

    #[test]
    fn agent_and_env_names_follow_the_slug_pattern() {
        let ok = ["a", "0", "support", "support-2", "a-", &"a".repeat(63)];
        let bad = [
            "",
            "-a",
            "A",
            "sup_port",
            "a.b",
            "../x",
            "a b",
            "é",
            &"a".repeat(64),
        ];
        for s in ok {
            assert_eq!(validate_agent(s), Ok(()), "{s:?}");
            assert_eq!(validate_env(s), Ok(()), "{s:?}");
        }
        for s in bad {
            assert!(validate_agent(s).is_err(), "{s:?}");
            assert!(validate_env(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn flag_keys_also_allow_dots_and_underscores_up_to_128_chars() {
        let ok = ["support.fast-path", "a_b", "0.1", &"a".repeat(128)];
        let bad = ["", ".a", "_a", "a/b", "A", "a%2F", &"a".repeat(129)];
        for s in ok {
            assert_eq!(validate_flag_key(s), Ok(()), "{s:?}");
        }
        for s in bad {
            assert!(validate_flag_key(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn instance_ids_allow_upper_case_and_colons_up_to_128_chars() {
        let ok = [
            "1234-0a1b2c3d",
            "pod-7:eu.west_1",
            "A",
            ".",
            &"Z".repeat(128),
        ];
        let bad = ["", "a b", "a/b", "a%2F", "é", "a?b", &"a".repeat(129)];
        for s in ok {
            assert_eq!(validate_instance(s), Ok(()), "{s:?}");
        }
        for s in bad {
            assert!(validate_instance(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn error_message_names_the_kind_the_value_and_the_pattern() {
        let err = validate_agent("../x").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"agent name "../x" is invalid: must match [a-z0-9][a-z0-9-]{0,62}"#
        );
        let err = validate_flag_key("A").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"flag key "A" is invalid: must match [a-z0-9][a-z0-9._-]{0,127}"#
        );
    }
}
