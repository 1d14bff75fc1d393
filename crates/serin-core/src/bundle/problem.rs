//! What validation reports.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::Bundle;

/// How bad a [`Problem`] is. Any error makes the bundle invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The bundle cannot be pushed or deployed.
    Error,
    /// Worth a look; does not block.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding of [`validate`](super::validate).
///
/// `code` is stable snake_case meant for machines and docs:
///
/// | code | meaning |
/// |------|---------|
/// | `missing_file` | a file the manifest names (or `bundle.yaml` itself) is absent |
/// | `invalid_yaml`, `invalid_json` | the file does not parse; location is `line L, column C` |
/// | `not_utf8` | the file is not UTF-8 text |
/// | `too_large` | a file, the number of tools/examples, or the whole bundle is over its limit |
/// | `budget_exceeded` | YAML aliases across the bundle expand past the validation budget; later YAML files are not parsed |
/// | `unknown_field`, `missing_field`, `invalid_field` | a field is not allowed, absent, or of the wrong type |
/// | `invalid_agent` | `agent` is not a valid slug |
/// | `empty_field` | a required string is empty |
/// | `path_outside_bundle` | a path is absolute, contains `..` or `\`, or a symlink escapes |
/// | `invalid_path` | a path is not usable (e.g. the examples dir is the bundle root) |
/// | `unpinned_model` | the snapshot is a moving alias (error when strict, warning in dev) |
/// | `invalid_tool_name` | a tool name is not `[a-zA-Z0-9_-]{1,64}` |
/// | `invalid_schema` | `input_schema` is not a valid JSON Schema, or not of type `object` |
/// | `duplicate_tool` | two tool files define the same name |
/// | `invalid_message` | an example message is empty or has tool calls outside an assistant turn |
/// | `unknown_tool` | an example calls, or `capabilities` in bundle.yaml names, a tool the bundle does not define (with the nearest name) |
/// | `missing_owner` | a `write` or `irreversible` capability has no `owner` |
/// | `invalid_limit` | a capability limit's name is not `[a-z][a-z0-9_]{0,63}` or its value is not a number ≥ 0 |
/// | `duplicate_capability` | a tool's capability is declared both in its file and in bundle.yaml |
/// | `tool_arguments_invalid` | an example's tool arguments do not match the tool's schema |
/// | `prompt_mentions_unknown_tool` | the prompt calls `name(` for a tool the bundle does not define |
/// | `empty_example` | (warning) an example has no messages |
/// | `unreferenced_file` | (warning) a file the manifest does not point at; it is ignored |
/// | `undeclared_capability` | (warning) a tool declares no capability; it is treated as `write` |
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The file, relative to the bundle directory (`.` for the bundle as a whole).
    pub file: String,
    /// Where in the file: a JSON pointer (`/model/snapshot`) or `line 12` / `line 3, column 5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Stable snake_case code.
    pub code: String,
    /// Human-readable reason.
    pub message: String,
}

impl Problem {
    /// An error-severity problem.
    pub fn error(
        file: impl Into<String>,
        location: Option<String>,
        code: &str,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            severity: Severity::Error,
            file: file.into(),
            location,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// A warning-severity problem.
    pub fn warning(
        file: impl Into<String>,
        location: Option<String>,
        code: &str,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(file, location, code, message)
        }
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// One line: `error: tools/refund.json /input_schema/type: <reason>`.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.file)?;
        if let Some(location) = &self.location {
            write!(f, " {location}")?;
        }
        // Messages may quote multi-line input; keep the report one line per problem.
        let message = self.message.replace(['\r', '\n'], " ");
        write!(f, ": {message}")
    }
}

/// The outcome of [`validate`](super::validate).
#[derive(Clone, Debug, PartialEq)]
pub struct Validation {
    /// Every problem found, grouped by file.
    pub problems: Vec<Problem>,
    /// The parsed bundle; `Some` if and only if no problem is an error.
    pub bundle: Option<Bundle>,
}

impl Validation {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }

    /// The error-severity problems.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.is_error())
    }

    /// The warning-severity problems.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.is_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_severity_file_location_and_message() {
        let p = Problem::error(
            "tools/refund.json",
            Some("/input_schema/type".into()),
            "invalid_schema",
            "12 is not valid\nat all",
        );
        assert_eq!(
            p.to_string(),
            "error: tools/refund.json /input_schema/type: 12 is not valid at all"
        );
        let p = Problem::warning("notes.txt", None, "unreferenced_file", "ignored");
        assert_eq!(p.to_string(), "warning: notes.txt: ignored");
    }
}
