//! Property tests: canonical JSON round-trips and the digest survives re-serialisation.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;
use serin_core::bundle::{
    Bundle, Example, Message, MessageRole, Metadata, ModelSpec, Tool, ToolCall,
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
        prop::collection::btree_map("[a-z_]{1,8}", ("\\PC{0,20}", json_value()), 0..4),
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
                    .map(|(name, (description, input_schema))| Tool {
                        name,
                        description,
                        input_schema,
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
}
