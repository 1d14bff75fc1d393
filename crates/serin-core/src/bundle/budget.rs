//! One YAML budget per validation, shared by every YAML file of the bundle.
//!
//! The parser's own limits are per document, so a body of many small files that each expand
//! aliases up to those limits (the "billion laughs" shape) costs seconds of CPU per file. Before
//! a YAML file is parsed for real, a cheap pass over its parser events computes how many nodes
//! and scalar bytes the document expands to once every alias is replaced by what it names; that
//! expansion is charged against one budget for the whole validation. A file that would overrun
//! it is refused unparsed, and so is every YAML file after it.

use serde_saphyr::granit_parser::{Event, Parser};

use super::Limits;

/// What is left of one validation's alias-expansion budget.
#[derive(Clone, Debug)]
pub(crate) struct YamlBudget {
    nodes_left: u64,
    bytes_left: u64,
    max_nodes: u64,
    max_bytes: u64,
    exhausted: bool,
}

/// The budget ran out while charging a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BudgetExceeded {
    /// The first file refused for the budget (false: an earlier file already exhausted it).
    pub first: bool,
    pub message: String,
}

/// What one document expands to.
#[derive(Clone, Copy, Debug, Default)]
struct Expansion {
    /// Nodes contributed by aliases (what the parser replays).
    nodes: u64,
    /// Scalar bytes contributed by aliases.
    bytes: u64,
}

impl YamlBudget {
    pub fn new(limits: &Limits) -> Self {
        let max_nodes = u64::try_from(limits.yaml_alias_nodes).unwrap_or(u64::MAX);
        let max_bytes = u64::try_from(limits.yaml_alias_bytes).unwrap_or(u64::MAX);
        YamlBudget {
            nodes_left: max_nodes,
            bytes_left: max_bytes,
            max_nodes,
            max_bytes,
            exhausted: false,
        }
    }

    /// Charges `parses` parses of `text`. Nodes written out in the text are not charged: the
    /// bundle's byte limits already bound them; only what aliases add is.
    pub fn charge(&mut self, text: &str, parses: u64) -> Result<(), BudgetExceeded> {
        if self.exhausted {
            return Err(BudgetExceeded {
                first: false,
                message: "not parsed: an earlier YAML file exhausted the validation budget".into(),
            });
        }
        let cap_nodes = self.nodes_left / parses.max(1);
        let cap_bytes = self.bytes_left / parses.max(1);
        match expansion(text, cap_nodes, cap_bytes) {
            Some(e) => {
                self.nodes_left = self
                    .nodes_left
                    .saturating_sub(e.nodes.saturating_mul(parses));
                self.bytes_left = self
                    .bytes_left
                    .saturating_sub(e.bytes.saturating_mul(parses));
                Ok(())
            }
            None => {
                self.exhausted = true;
                Err(BudgetExceeded {
                    first: true,
                    message: format!(
                        "validation budget exceeded: YAML aliases in this request would expand to more than {} nodes or {} bytes across all files (yaml_alias_nodes, yaml_alias_bytes); this file and every YAML file after it were not parsed",
                        self.max_nodes, self.max_bytes
                    ),
                })
            }
        }
    }
}

/// What the aliases of `text` add once expanded, or `None` as soon as that is over either cap.
/// A document the parser rejects is counted up to the error; the real parse reports it.
fn expansion(text: &str, cap_nodes: u64, cap_bytes: u64) -> Option<Expansion> {
    // Per anchor id: the nodes and scalar bytes of the anchored node, its aliases expanded.
    let mut anchors: std::collections::HashMap<usize, (u64, u64)> =
        std::collections::HashMap::new();
    // Open collections: (anchor id, nodes, bytes) accumulated so far.
    let mut open: Vec<(usize, u64, u64)> = Vec::new();
    let mut added = Expansion::default();
    for item in Parser::new_from_str(text) {
        let Ok((event, _)) = item else {
            break;
        };
        let (nodes, bytes) = match event {
            Event::Scalar(value, _, anchor, _) => {
                let size = (1, u64::try_from(value.len()).unwrap_or(u64::MAX));
                if anchor != 0 {
                    anchors.insert(anchor, size);
                }
                size
            }
            Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _) => {
                open.push((anchor, 1, 0));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((anchor, nodes, bytes)) = open.pop() else {
                    continue;
                };
                if anchor != 0 {
                    anchors.insert(anchor, (nodes, bytes));
                }
                (nodes, bytes)
            }
            Event::Alias(id) => {
                let (nodes, bytes) = anchors.get(&id).copied().unwrap_or((1, 0));
                added.nodes = added.nodes.saturating_add(nodes);
                added.bytes = added.bytes.saturating_add(bytes);
                if added.nodes > cap_nodes || added.bytes > cap_bytes {
                    return None;
                }
                (nodes, bytes)
            }
            _ => continue,
        };
        if let Some(parent) = open.last_mut() {
            parent.1 = parent.1.saturating_add(nodes);
            parent.2 = parent.2.saturating_add(bytes);
        }
    }
    Some(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bomb(levels: usize, fanout: usize) -> String {
        let mut s = String::from("a0: &a0 [\"lol\"]\n");
        for i in 1..levels {
            let refs = vec![format!("*a{}", i - 1); fanout].join(", ");
            s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        s
    }

    #[test]
    fn plain_yaml_costs_nothing() {
        let mut b = YamlBudget::new(&Limits::DEFAULT);
        for _ in 0..1000 {
            assert!(
                b.charge("messages:\n  - role: user\n    content: hi\n", 2)
                    .is_ok()
            );
        }
        assert_eq!(b.nodes_left, b.max_nodes);
    }

    #[test]
    fn a_few_shared_blocks_fit() {
        let mut b = YamlBudget::new(&Limits::DEFAULT);
        let text = "base: &b {role: user, content: hello}\nmessages: [*b, *b, *b]\n";
        assert!(b.charge(text, 2).is_ok());
        assert_eq!(b.max_nodes - b.nodes_left, 2 * 3 * 5);
    }

    #[test]
    fn one_alias_bomb_exhausts_the_budget_and_refuses_every_later_file() {
        let mut b = YamlBudget::new(&Limits::DEFAULT);
        let err = b.charge(&bomb(9, 10), 1).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.first && e.message.contains("budget"))
        );
        let later = b.charge("a: 1\n", 1).err();
        assert!(later.is_some_and(|e| !e.first));
    }

    #[test]
    fn many_bombs_each_under_a_per_file_limit_add_up() {
        // Each adds 43,935 nodes: two fit in the budget, a third does not.
        let mut b = YamlBudget::new(&Limits::DEFAULT);
        assert!(b.charge(&bomb(7, 5), 1).is_ok());
        assert!(b.charge(&bomb(7, 5), 1).is_ok());
        assert_eq!(b.max_nodes - b.nodes_left, 2 * 43_935);
        assert!(b.charge(&bomb(7, 5), 1).is_err());
    }

    #[test]
    fn large_scalars_repeated_by_aliases_count_as_bytes() {
        let big = "x".repeat(64 * 1024);
        let refs = vec!["*s"; 80].join(", ");
        let text = format!("s: &s \"{big}\"\nl: [{refs}]\n");
        let mut b = YamlBudget::new(&Limits::DEFAULT);
        assert!(b.charge(&text, 1).is_err());
    }
}
