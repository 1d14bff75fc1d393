//! Property tests: canonical JSON round-trips and the digest survives re-serialisation.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;
use serin_core::bundle::capabilities::{self, ChangeKind};
use serin_core::bundle::{
    Bundle, Capability, EffectClass, Example, Message, MessageRole, Metadata, ModelSpec, Tool,
    ToolCall,
};

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_~/]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of("\\PC{0,16}")
}

fn role() -> impl Strategy<Value = MessageRole> {
    prop_oneof![
        Just(MessageRole::System),
        Just(MessageRole::User),
        Just(MessageRole::Assistant),
        Just(MessageRole::Tool),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        role(),
        opt_text(),
        prop::collection::vec(
            ("[a-z_]{1,8}", json_value())
                .prop_map(|(name, arguments)| ToolCall { name, arguments }),
            0..3,
        ),
    )
        .prop_map(|(role, content, tool_calls)| Message {
            role,
            content,
            tool_calls,
        })
}

fn capability() -> impl Strategy<Value = Option<Capability>> {
    prop::option::of(
        (
            prop_oneof![
                Just(EffectClass::Read),
                Just(EffectClass::Write),
                Just(EffectClass::Irreversible),
            ],
            prop::option::of("[a-z-]{1,8}"),
            prop::collection::btree_map(
                "max_[a-z]{1,4}",
                prop_oneof![
                    (0u32..1000).prop_map(serde_json::Number::from),
                    (0.0f64..1.0e6).prop_map(|f| serde_json::Number::from_f64(f).unwrap()),
                ],
                0..3,
            ),
        )
            .prop_map(|(effect, owner, limits)| Capability {
                effect,
                owner,
                limits,
            }),
    )
}

/// A JSON Schema-ish object built from the keywords the capability diff classifies.
fn schema() -> impl Strategy<Value = Value> {
    let leaf = prop::collection::btree_map(
        prop_oneof![
            Just("type"),
            Just("maximum"),
            Just("minimum"),
            Just("maxLength"),
            Just("enum"),
            Just("pattern"),
        ],
        prop_oneof![
            Just(Value::from("string")),
            Just(serde_json::json!(["integer", "string"])),
            (0u8..5).prop_map(Value::from),
            Just(serde_json::json!(["a", "b"])),
        ],
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    leaf.prop_recursive(2, 16, 3, |inner| {
        (
            prop::collection::btree_map("[ab]", inner.clone(), 0..3),
            prop::collection::vec("[ab]", 0..2),
            prop::option::of(any::<bool>()),
            prop::option::of(inner),
        )
            .prop_map(|(props, required, additional, items)| {
                let mut o = serde_json::Map::new();
                o.insert("type".into(), Value::from("object"));
                o.insert(
                    "properties".into(),
                    Value::Object(props.into_iter().collect()),
                );
                o.insert("required".into(), serde_json::json!(required));
                if let Some(a) = additional {
                    o.insert("additionalProperties".into(), Value::Bool(a));
                }
                if let Some(i) = items {
                    o.insert("items".into(), i);
                }
                Value::Object(o)
            })
    })
}

/// Bundles over a small pool of tool names, so two of them share some tools.
fn tool_bundle() -> impl Strategy<Value = Bundle> {
    prop::collection::btree_map("[a-d]", (schema(), capability()), 0..4).prop_map(|tools| {
        let tools = tools
            .into_iter()
            .map(|(name, (input_schema, capability))| Tool {
                name,
                description: "d".into(),
                input_schema,
                capability,
            })
            .collect();
        Bundle {
            agent: "support".into(),
            model: ModelSpec {
                provider: "anthropic".into(),
                snapshot: "claude-opus-4-7-20260108".into(),
                params: BTreeMap::new(),
            },
            prompt: "p".into(),
            examples: Vec::new(),
            tools,
            eval_set: None,
            metadata: Metadata::default(),
        }
    })
}

fn kinds(from: &Bundle, to: &Bundle, kind: ChangeKind) -> Vec<String> {
    let mut tools: Vec<String> = capabilities::changes(from, to)
        .into_iter()
        .filter(|c| c.kind == kind)
        .map(|c| c.tool)
        .collect();
    tools.sort();
    tools
}

fn bundle() -> impl Strategy<Value = Bundle> {
    (
        "[a-z0-9][a-z0-9-]{0,10}",
        (
            "\\PC{1,10}",
            "\\PC{1,20}",
            prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..4),
        ),
        "(\\PC|\r\n|\n){0,60}",
        prop::collection::btree_map(
            "[a-z-]{1,8}\\.yaml",
            prop::collection::vec(message(), 0..4),
            0..3,
        ),
        prop::collection::btree_map(
            "[a-z_]{1,8}",
            ("\\PC{0,20}", json_value(), capability()),
            0..4,
        ),
        opt_text(),
        (opt_text(), opt_text(), opt_text(), opt_text()),
    )
        .prop_map(
            |(agent, (provider, snapshot, params), prompt, examples, tools, eval_set, meta)| {
                let params: BTreeMap<String, Value> = params;
                // Reverse so canonicalisation has sorting to do.
                let examples = examples
                    .into_iter()
                    .rev()
                    .map(|(name, messages)| Example { name, messages })
                    .collect();
                let tools = tools
                    .into_iter()
                    .rev()
                    .map(|(name, (description, input_schema, capability))| Tool {
                        name,
                        description,
                        input_schema,
                        capability,
                    })
                    .collect();
                Bundle {
                    agent,
                    model: ModelSpec {
                        provider,
                        snapshot,
                        params,
                    },
                    prompt,
                    examples,
                    tools,
                    eval_set,
                    metadata: Metadata {
                        author: meta.0,
                        reviewer: meta.1,
                        commit: meta.2,
                        description: meta.3,
                    },
                }
            },
        )
}

proptest! {
    #[test]
    fn canonical_json_round_trips_and_the_digest_is_invariant(b in bundle()) {
        let json = b.canonical_json();
        let back = Bundle::from_canonical_json(&json).unwrap();
        prop_assert_eq!(back.canonical_json(), json.clone());
        prop_assert_eq!(back.digest(), b.digest());

        let mut canonical = b.clone();
        canonical.canonicalize();
        prop_assert_eq!(&back, &canonical);

        // Re-serialising with the derived (pretty, unsorted) Serialize and decoding again
        // does not change the digest either.
        let pretty = serde_json::to_string_pretty(&b).unwrap();
        prop_assert_eq!(Bundle::from_canonical_json(&pretty).unwrap().digest(), b.digest());
    }

    #[test]
    fn a_bundle_has_no_capability_changes_against_itself(b in tool_bundle()) {
        prop_assert_eq!(capabilities::changes(&b, &b), vec![]);
    }

    #[test]
    fn capability_changes_mirror_each_other(a in tool_bundle(), b in tool_bundle()) {
        let (ab, ba) = (capabilities::changes(&a, &b), capabilities::changes(&b, &a));
        prop_assert_eq!(kinds(&a, &b, ChangeKind::Added), kinds(&b, &a, ChangeKind::Removed));
        prop_assert_eq!(kinds(&a, &b, ChangeKind::ClassRaised), kinds(&b, &a, ChangeKind::ClassLowered));
        prop_assert_eq!(kinds(&a, &b, ChangeKind::OwnerChanged), kinds(&b, &a, ChangeKind::OwnerChanged));
        // A pure narrowing one way is a widening the other way.
        for t in kinds(&a, &b, ChangeKind::SchemaNarrowed) {
            prop_assert!(kinds(&b, &a, ChangeKind::SchemaWidened).contains(&t), "{}", t);
        }
        // Sorted: everything needing approval comes first, then by class, highest first.
        for list in [&ab, &ba] {
            for w in list.windows(2) {
                let (x, y) = (&w[0], &w[1]);
                prop_assert!(x.needs_approval() >= y.needs_approval());
                if x.needs_approval() == y.needs_approval() {
                    prop_assert!(x.class >= y.class);
                }
            }
            for c in list.iter() {
                prop_assert_eq!(
                    c.needs_approval(),
                    matches!(c.kind, ChangeKind::Added | ChangeKind::ClassRaised | ChangeKind::SchemaWidened | ChangeKind::LimitRaised)
                        && c.class >= EffectClass::Write
                );
            }
        }
    }
}
