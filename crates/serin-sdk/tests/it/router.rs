//! `Router::from_snapshot`: static local decisions, no runtime.

use serin_sdk::{Arm, RequestContext, Router, SdkError};

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
