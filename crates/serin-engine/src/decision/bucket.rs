//! Bucketing v1: the stable map from (salt, unit key) to a bucket in `0..=9999`.
//!
//! `bucket = (xxh3_64(salt ‖ 0x00 ‖ key) as u128 * 10000) >> 64` over the UTF-8 bytes, with
//! XXH3's default secret and seed 0. A unit is in a share of `w` basis points iff
//! `bucket < w`, so raising a weight only ever adds units. Every SDK must reproduce the golden
//! vectors in `crates/serin-core/testdata/bucketing-v1.json`.

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::model::Percent;

/// Inputs up to this many bytes (salt, separator and key) are joined in a stack buffer and
/// hashed in one shot; longer ones are streamed. Both give the same hash; the one-shot path is
/// about twice as fast for the 20–40 byte inputs of real traffic (see `benches/decide.rs`).
const STACK_INPUT: usize = 128;

/// The bucket, `0..=9999`, of `key` under `salt`. Allocates nothing.
#[inline]
pub fn bucket(salt: &str, key: &str) -> u16 {
    scale(hash_joined(salt.as_bytes(), key.as_bytes()))
}

/// Whether a unit in `bucket` is inside a share of `share`: `bucket < basis points`.
///
/// Monotone: a unit inside at some share stays inside at every larger share.
#[inline]
pub fn in_share(bucket: u16, share: Percent) -> bool {
    bucket < share.basis_points()
}

/// Maps a 64-bit hash onto `0..=9999` by multiply-shift (no modulo bias worth the name, and
/// no division).
#[inline]
fn scale(hash: u64) -> u16 {
    let b = (u128::from(hash) * 10_000) >> 64;
    // b < 10_000 because hash < 2^64.
    u16::try_from(b).unwrap_or(9_999)
}

/// `xxh3_64(salt ‖ 0x00 ‖ key)` without allocating.
#[inline]
fn hash_joined(salt: &[u8], key: &[u8]) -> u64 {
    let len = salt.len() + 1 + key.len();
    let mut buf = [0u8; STACK_INPUT];
    if let Some(joined) = buf.get_mut(..len) {
        let (head, rest) = joined.split_at_mut(salt.len());
        head.copy_from_slice(salt);
        if let Some((_separator, tail)) = rest.split_first_mut() {
            // The separator is already 0.
            tail.copy_from_slice(key);
            return xxh3_64(joined);
        }
    }
    let mut h = Xxh3::new();
    h.update(salt);
    h.update(&[0]);
    h.update(key);
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_and_streaming_paths_agree_around_the_boundary() {
        for salt_len in [0, 1, 5, 63, 127, 128, 200] {
            for key_len in [0, 1, 30, 64, 126, 127, 128, 300] {
                let salt = "s".repeat(salt_len);
                let key = "k".repeat(key_len);
                let mut joined = salt.clone().into_bytes();
                joined.push(0);
                joined.extend_from_slice(key.as_bytes());
                assert_eq!(
                    hash_joined(salt.as_bytes(), key.as_bytes()),
                    xxh3_64(&joined),
                    "salt {salt_len} key {key_len}"
                );
            }
        }
    }

    #[test]
    fn scale_covers_the_whole_range() {
        assert_eq!(scale(0), 0);
        assert_eq!(scale(u64::MAX), 9_999);
        assert_eq!(scale(1 << 63), 5_000);
    }
}
