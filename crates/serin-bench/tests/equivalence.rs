//! The three engines implement the same rule set: excluded tenants always get stable, about
//! 10% of the other users get the canary, and assignment is sticky by user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "../peers/mod.rs"]
mod peers;

use serin_bench::{Request, Route, RuleSet, requests};

const N: usize = 20_000;

#[derive(Debug, Default)]
struct Tally {
    excluded: usize,
    excluded_canary: usize,
    included: usize,
    included_canary: usize,
    killed: usize,
}

fn tally(reqs: &[Request], mut route: impl FnMut(&Request) -> Route) -> Tally {
    let mut t = Tally::default();
    for r in reqs {
        let got = route(r);
        match (r.excluded, got) {
            (_, Route::Killed) => t.killed += 1,
            (true, Route::Canary) => {
                t.excluded += 1;
                t.excluded_canary += 1;
            }
            (true, Route::Stable) => t.excluded += 1,
            (false, Route::Canary) => {
                t.included += 1;
                t.included_canary += 1;
            }
            (false, Route::Stable) => t.included += 1,
        }
    }
    t
}

/// The check every engine must pass on the reference rule set.
fn check(engine: &str, reqs: &[Request], route: impl FnMut(&Request) -> Route) {
    let t = tally(reqs, route);
    assert_eq!(t.killed, 0, "{engine}: {t:?}");
    assert!(t.excluded > N / 20, "{engine}: {t:?}");
    assert_eq!(
        t.excluded_canary, 0,
        "{engine}: excluded tenants must stay stable: {t:?}"
    );
    // 10% of ~18,000 units: sd ~ 40, so +-1.5 points is > 10 sd.
    #[allow(clippy::cast_precision_loss)]
    let share = t.included_canary as f64 / t.included as f64;
    assert!(
        (0.085..=0.115).contains(&share),
        "{engine}: canary share {share}: {t:?}"
    );
}

/// A second request of the same user and tenant (new request id) lands on the same arm.
fn same_user_again(r: &Request) -> Request {
    Request {
        request_id: format!("{}-again", r.request_id),
        ..r.clone()
    }
}

#[test]
fn serin_routes_a_tenth_of_included_users_to_canary_and_no_excluded_tenant() {
    let e = peers::serin::Engine::new(&RuleSet::reference());
    let reqs = requests(N);
    check("serin", &reqs, |r| {
        e.decide(&peers::serin::Engine::context(r))
    });
    for r in reqs.iter().take(2_000) {
        let again = same_user_again(r);
        assert_eq!(
            e.decide(&peers::serin::Engine::context(r)),
            e.decide(&peers::serin::Engine::context(&again))
        );
    }
}

#[test]
fn yggdrasil_routes_a_tenth_of_included_users_to_canary_and_no_excluded_tenant() {
    let e = peers::yggdrasil::Engine::new(&RuleSet::reference());
    let reqs = requests(N);
    check("yggdrasil", &reqs, |r| {
        e.decide(&peers::yggdrasil::Engine::context(r))
    });
    for r in reqs.iter().take(2_000) {
        let again = same_user_again(r);
        assert_eq!(
            e.decide(&peers::yggdrasil::Engine::context(r)),
            e.decide(&peers::yggdrasil::Engine::context(&again))
        );
    }
}

#[test]
fn launchdarkly_routes_a_tenth_of_included_users_to_canary_and_no_excluded_tenant() {
    let e = peers::launchdarkly::Engine::new(&RuleSet::reference());
    let reqs = requests(N);
    check("launchdarkly", &reqs, |r| {
        e.decide(&peers::launchdarkly::Engine::context(r))
    });
    for r in reqs.iter().take(2_000) {
        let again = same_user_again(r);
        assert_eq!(
            e.decide(&peers::launchdarkly::Engine::context(r)),
            e.decide(&peers::launchdarkly::Engine::context(&again))
        );
    }
}

#[test]
fn every_engine_honours_a_large_exclusion_list() {
    let rules = RuleSet::with_exclusions(10_000);
    let reqs = requests(N);
    let s = peers::serin::Engine::new(&rules);
    check("serin/10k", &reqs, |r| {
        s.decide(&peers::serin::Engine::context(r))
    });
    let y = peers::yggdrasil::Engine::new(&rules);
    check("yggdrasil/10k", &reqs, |r| {
        y.decide(&peers::yggdrasil::Engine::context(r))
    });
    let l = peers::launchdarkly::Engine::new(&rules);
    check("launchdarkly/10k", &reqs, |r| {
        l.decide(&peers::launchdarkly::Engine::context(r))
    });
}

#[test]
fn every_engine_kills_every_request_when_the_kill_switch_is_on() {
    let rules = RuleSet {
        killed: true,
        ..RuleSet::reference()
    };
    let reqs = requests(500);
    let s = peers::serin::Engine::new(&rules);
    let y = peers::yggdrasil::Engine::new(&rules);
    let l = peers::launchdarkly::Engine::new(&rules);
    for r in &reqs {
        assert_eq!(s.decide(&peers::serin::Engine::context(r)), Route::Killed);
        assert_eq!(
            y.decide(&peers::yggdrasil::Engine::context(r)),
            Route::Killed
        );
        assert_eq!(
            l.decide(&peers::launchdarkly::Engine::context(r)),
            Route::Killed
        );
    }
}
