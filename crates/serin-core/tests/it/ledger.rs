//! Every stored ledger type reads back as written, empty and extreme values included.

use proptest::prelude::*;
use serin_core::ledger::{Effect, EffectIntent, EffectStatus};

fn status() -> impl Strategy<Value = EffectStatus> {
    prop::sample::select(EffectStatus::ALL.to_vec())
}

fn text() -> impl Strategy<Value = String> {
    // Empty, long, unicode and JSON-hostile text: the store and the wire must keep it intact.
    prop_oneof![
        Just(String::new()),
        ".{0,64}",
        "[\"\\\\\u{0}-\u{1f}]{0,8}",
        Just("x".repeat(4096))
    ]
}

fn extreme_i64() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0), Just(i64::MIN), Just(i64::MAX), any::<i64>()]
}

fn effect() -> impl Strategy<Value = Effect> {
    (
        (text(), text(), extreme_i64(), text(), text(), text()),
        (
            extreme_i64(),
            status(),
            prop::option::of(text()),
            extreme_i64(),
            text(),
        ),
        prop::option::of(extreme_i64()),
    )
        .prop_map(
            |(
                (key, agent, bundle, request_id, tool, args_digest),
                (timeout_ms, status, detail, created_at_ms, created_by),
                resolved_at_ms,
            )| Effect {
                key,
                agent,
                bundle,
                request_id,
                tool,
                args_digest,
                timeout_ms,
                status,
                detail,
                created_at_ms,
                created_by,
                resolved_at_ms,
            },
        )
}

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn effects_round_trip(e in effect()) {
        prop_assert_eq!(roundtrip(&e), e);
    }

    #[test]
    fn intents_round_trip(
        key in text(), bundle in extreme_i64(), timeout in prop::option::of(extreme_i64()), s in text()
    ) {
        let i = EffectIntent {
            key, agent: s.clone(), bundle, request_id: s.clone(), tool: s.clone(), args_digest: s, timeout_ms: timeout,
        };
        prop_assert_eq!(roundtrip(&i), i);
    }

    #[test]
    fn statuses_round_trip_through_their_names(s in status()) {
        prop_assert_eq!(EffectStatus::parse(s.as_str()), Some(s));
        prop_assert_eq!(roundtrip(&s), s);
        prop_assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
    }

    #[test]
    fn expiry_never_fires_early_nor_touches_a_result(e in effect(), now in extreme_i64()) {
        match e.expire(now) {
            Some(x) => {
                prop_assert_eq!(e.status, EffectStatus::Intent);
                prop_assert!(now >= e.deadline_ms());
                prop_assert_eq!(x.status, EffectStatus::Unknown);
            }
            None => prop_assert!(e.status != EffectStatus::Intent || now < e.deadline_ms()),
        }
    }
}
