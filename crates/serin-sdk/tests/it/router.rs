//! `Router::from_snapshot`: static local decisions, no runtime.

use serin_sdk::{
    Arm, CompiledSnapshot, Context, MergeError, RequestContext, Router, SdkError, merge_json,
    merge_snapshot,
};

use crate::data::{AGENT, snapshot, with_flag, with_release};

#[test]
fn static_router_decides_from_the_snapshot_it_was_given() {
    let router = Router::from_snapshot(with_flag(snapshot(7, 2, Some(1)))).unwrap();
    let d = router.decide(AGENT, &RequestContext::new("r-1")).unwrap();
    assert_eq!(d.arm, Arm::Stable);
    assert_eq!(d.bundle.as_ref().unwrap().id, "support@2");
    assert_eq!(d.snapshot_version, 7);
    assert_eq!(d.reason_code(), "no_release");
    assert!(!d.stale, "a static router has no server to be behind");
    assert!(!d.reason_text.contains("stale"), "{}", d.reason_text);
    assert_eq!(
        d.bundle_contents().unwrap().prompt,
        "You are support, version 2."
    );
    assert_eq!(
        d.flag("support.fast-path"),
        Some(&serde_json::json!({"mode": "fast"}))
    );
    assert_eq!(router.snapshot_version(), Some(7));
    let h = router.health();
    assert!(!h.connected && !h.stale);
    assert_eq!(h.version, Some(7));
}

#[test]
fn decide_accepts_an_engine_context_and_the_zero_copy_path_agrees() {
    let router = Router::from_snapshot(with_release(snapshot(3, 1, None), 2, "50%")).unwrap();
    let snap = router.snapshot().unwrap();
    let mut canary = 0;
    for i in 0..200 {
        let mut ctx = RequestContext::new(format!("r-{i}"));
        ctx.user = Some(format!("u-{i}"));
        let owned = router.decide(AGENT, &ctx.as_context()).unwrap();
        let borrowed = snap.decide(AGENT, &ctx.as_context()).unwrap();
        assert_eq!(owned.arm, borrowed.arm);
        assert_eq!(owned.bundle.as_ref(), borrowed.bundle);
        assert_eq!(owned.release.as_deref(), Some("rel-1"));
        if owned.arm == Arm::Canary {
            canary += 1;
            assert_eq!(owned.bundle.unwrap().id, "support@2");
        }
    }
    assert!(
        (50..150).contains(&canary),
        "{canary} of 200 on a 50% canary"
    );
}

#[test]
fn unknown_agent_and_uncompilable_snapshot_are_errors() {
    let router = Router::from_snapshot(snapshot(1, 1, None)).unwrap();
    assert!(matches!(
        router.decide("billing", &RequestContext::new("r")),
        Err(SdkError::Decide(_))
    ));
    let mut broken = snapshot(1, 1, None);
    broken.bundles.clear();
    assert!(matches!(
        Router::from_snapshot(broken),
        Err(SdkError::Compile(_))
    ));
}

#[test]
fn the_borrowed_decision_says_what_the_owned_one_says() {
    let router =
        Router::from_snapshot(with_flag(with_release(snapshot(3, 1, None), 2, "50%"))).unwrap();
    let snap = router.current().unwrap();
    assert_eq!(snap.version(), Some(3));
    assert!(!snap.stale());
    for i in 0..200 {
        let (id, user) = (format!("r-{i}"), format!("u-{i}"));
        let tenant = if i % 3 == 0 { "acme" } else { "globex" };
        let ctx = Context::new(&id).user(&user).tenant(tenant);
        let mut owned_ctx = RequestContext::new(id.clone());
        owned_ctx.user = Some(user.clone());
        owned_ctx.tenant = Some(tenant.to_owned());
        let owned = router.decide(AGENT, &owned_ctx).unwrap();
        let d = snap.decide(AGENT, &ctx).unwrap();
        assert_eq!(d.arm, owned.arm);
        assert_eq!(d.bundle, owned.bundle.as_ref());
        assert_eq!(d.release, owned.release.as_deref());
        assert_eq!(d.reason, owned.reason);
        assert_eq!(d.reason_code(), owned.reason_code());
        assert_eq!(d.reason_text(), owned.reason_text);
        assert_eq!(d.snapshot_version, owned.snapshot_version);
        assert_eq!(d.stale, owned.stale);
        assert_eq!(
            d.bundle_contents().map(|b| &b.prompt),
            owned.bundle_contents().map(|b| &b.prompt)
        );
        let flags: Vec<(&str, &serde_json::Value)> = d.flags().map(|f| (f.key, f.value)).collect();
        let owned_flags: Vec<(&str, &serde_json::Value)> =
            owned.flags.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(flags, owned_flags);
        assert_eq!(
            d.flag("support.fast-path").map(|f| f.value),
            owned.flag("support.fast-path")
        );
    }
    // Only this agent's flags are reachable from its decision.
    let d = snap.decide(AGENT, &Context::new("r")).unwrap();
    assert!(d.flag("billing.fast-path").is_none() && d.flag("support").is_none());
    assert!(matches!(
        snap.decide("billing", &Context::new("r")),
        Err(SdkError::Decide(_))
    ));
}

#[test]
fn merge_json_completes_an_event_as_merge_snapshot_does() {
    let first = with_flag(with_release(snapshot(3, 1, None), 2, "50%"));
    let current = CompiledSnapshot::from_json(&serde_json::to_vec(&first).unwrap()).unwrap();
    // The next event carries only the new bundle: the release's candidate became stable.
    let mut next = snapshot(4, 2, Some(1));
    next.bundles.retain(|id, _| id == "support@2");
    let json = serde_json::to_vec(&next).unwrap();
    let from_json = merge_json(Some(&current), &json).unwrap();
    let from_owned = merge_snapshot(Some(&current), next.clone()).unwrap();
    assert_eq!(from_json.snapshot(), from_owned.snapshot());
    assert!(matches!(
        merge_json(None, &json),
        Err(MergeError::MissingBundle { .. })
    ));
    assert!(matches!(
        merge_json(Some(&current), b"{\"env\":"),
        Err(MergeError::Json(_))
    ));
}
