//! Bucketing v1: golden vectors every SDK reproduces, an independent cross-check, and the
//! monotone ramp.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serin_core::decision::{Percent, bucket, in_share};
use xxhash_rust::xxh3::xxh3_64;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/bucketing-v1.json");

const ALGORITHM: &str = "Serin bucketing v1. bytes = UTF-8(salt) ++ [0x00] ++ UTF-8(key); \
h = XXH3_64bits(bytes) (seed 0, default secret; xxh3_64 in xxhash); \
bucket = (h * 10000) >> 64 computed in 128-bit unsigned arithmetic, so 0 <= bucket <= 9999. \
A unit is inside a share of w basis points (0..=10000) iff bucket < w. \
Salt: the release id for release arms, the flag key for flags. \
Each vector gives salt, key, the expected bucket, and the intermediate hash as 16 lowercase hex digits.";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Golden {
    algorithm: String,
    vectors: Vec<Vector>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Vector {
    salt: String,
    key: String,
    bucket: u16,
    xxh3_64: String,
}

/// 10 salts x 20 keys: empty strings, unicode, NUL bytes, and lengths on both sides of the
/// 128-byte one-shot buffer.
fn cases() -> Vec<(String, String)> {
    let salts = [
        "".to_owned(),
        "r-1".to_owned(),
        "r-12".to_owned(),
        "R-12".to_owned(),
        "release-2026-01-01".to_owned(),
        "support.fast-path".to_owned(),
        "a.very.long.flag-key_with.many.segments-0123456789".to_owned(),
        "rélease-ü".to_owned(),
        "🚀".to_owned(),
        "s".repeat(127),
    ];
    let keys = [
        "".to_owned(),
        "0".to_owned(),
        "user-1".to_owned(),
        "user-2".to_owned(),
        "user-42".to_owned(),
        "tenant-acme".to_owned(),
        "req-0000000000000001".to_owned(),
        "550e8400-e29b-41d4-a716-446655440000".to_owned(),
        "José".to_owned(),
        "用户-七".to_owned(),
        "emoji-🚀🔥".to_owned(),
        "with\u{0}nul".to_owned(),
        "with space\tand tab".to_owned(),
        "user@example.com".to_owned(),
        "k".repeat(100),
        "x".repeat(110),
        "y".repeat(127),
        "z".repeat(200),
        "long-".repeat(200),
        "ü".repeat(300),
    ];
    salts
        .iter()
        .flat_map(|s| keys.iter().map(move |k| (s.clone(), k.clone())))
        .collect()
}

/// The spec's formula on an owned, concatenated buffer: independent of `bucket`'s
/// stack-buffer and streaming paths.
fn reference(salt: &str, key: &str) -> (u64, u16) {
    let mut bytes = salt.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    let h = xxh3_64(&bytes);
    let b = (h as u128 * 10_000) >> 64;
    (h, u16::try_from(b).unwrap())
}

fn generate() -> Golden {
    Golden {
        algorithm: ALGORITHM.to_owned(),
        vectors: cases()
            .into_iter()
            .map(|(salt, key)| {
                let (h, b) = reference(&salt, &key);
                Vector {
                    salt,
                    key,
                    bucket: b,
                    xxh3_64: format!("{h:016x}"),
                }
            })
            .collect(),
    }
}

#[test]
fn golden_vectors_are_reproduced_and_current() {
    if std::env::var_os("SERIN_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        let text = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
        std::fs::write(GOLDEN, text).unwrap();
    }
    let text = std::fs::read_to_string(GOLDEN)
        .expect("testdata/bucketing-v1.json is missing; run with SERIN_UPDATE_GOLDEN=1");
    let golden: Golden = serde_json::from_str(&text).unwrap();
    assert_eq!(golden.vectors.len(), 200);
    assert_eq!(
        golden.algorithm, ALGORITHM,
        "regenerate with SERIN_UPDATE_GOLDEN=1"
    );
    for v in &golden.vectors {
        assert_eq!(bucket(&v.salt, &v.key), v.bucket, "{v:?}");
        let (h, _) = reference(&v.salt, &v.key);
        assert_eq!(format!("{h:016x}"), v.xxh3_64, "{v:?}");
    }
    // The committed file holds exactly the cases above, so it cannot drift silently.
    assert_eq!(golden, generate());
}

#[test]
fn buckets_match_values_computed_with_the_c_reference_library() {
    // XXH3_64bits from libxxhash 0.8.1 over salt ‖ 0x00 ‖ key, then (h * 10000) >> 64.
    let check = |salt: &str, key: &str, hash: u64, expect: u16| {
        let (h, b) = reference(salt, key);
        assert_eq!(h, hash, "{salt:?} {key:?}");
        assert_eq!(b, expect, "{salt:?} {key:?}");
        assert_eq!(bucket(salt, key), expect, "{salt:?} {key:?}");
    };
    check("r-12", "user-42", 0x2dd5_9c20_ca1c_d197, 1790);
    check("", "", 0xc44b_dff4_074e_ecdb, 7667);
    check("support.fast-path", "tenant-7", 0x7eff_79e4_7be7_a3de, 4960);
    check("r-1", "José 用户 🚀", 0xbef3_1ccb_9d3d_dad3, 7458);
    check("r-long", &"k".repeat(300), 0xbae4_5fa3_eb6d_e96f, 7300);
    check("release-0001", "", 0x2818_5e7b_ff87_fc07, 1566);
}

#[test]
fn salt_and_key_are_separated_so_moving_bytes_across_the_boundary_changes_the_bucket_input() {
    // Without the 0x00 separator these two would hash the same bytes.
    let (a, _) = reference("r-1", "2user");
    let (b, _) = reference("r-12", "user");
    assert_ne!(a, b);
}

#[test]
fn shares_at_the_ends_are_nobody_and_everybody() {
    for b in [0, 1, 4_999, 9_999] {
        assert!(!in_share(b, Percent::ZERO));
        assert!(in_share(b, Percent::FULL));
    }
    let five = Percent::parse("5%").unwrap();
    assert!(in_share(499, five));
    assert!(!in_share(500, five));
}

proptest! {
    #[test]
    fn raising_a_share_never_moves_a_unit_out(
        salt in ".{0,40}",
        key in ".{0,80}",
        w1 in 0u32..=10_000,
        w2 in 0u32..=10_000,
    ) {
        let (lo, hi) = (w1.min(w2), w1.max(w2));
        let lo = Percent::from_basis_points(lo).unwrap();
        let hi = Percent::from_basis_points(hi).unwrap();
        let b = bucket(&salt, &key);
        prop_assert!(b <= 9_999);
        prop_assert!(!in_share(b, lo) || in_share(b, hi));
    }

    #[test]
    fn bucket_equals_the_spec_formula_for_any_input(salt in ".{0,100}", key in ".{0,200}") {
        prop_assert_eq!(bucket(&salt, &key), reference(&salt, &key).1);
    }
}
