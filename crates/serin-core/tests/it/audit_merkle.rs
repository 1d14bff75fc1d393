//! The audit Merkle tree against RFC 6962/9162 reference vectors, an independent bottom-up
//! implementation, and tampering of every kind; signed heads against forgery.

use proptest::prelude::*;
use serin_core::audit::merkle::{
    self, Hash, consistency_proof, first_divergence, inclusion_proof, leaf_hash, node_hash, root,
    root_from_subtrees, subtree_hashes, subtree_ranges, subtrees, verify_consistency,
    verify_inclusion,
};
use serin_core::audit::{HeadError, SignedHead, SigningKey, parse_public_key, signing_bytes};

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// The eight inputs of the Certificate Transparency reference tests.
fn ct_leaves() -> Vec<Hash> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|x| leaf_hash(&hex::decode(x).unwrap()))
    .collect()
}

const CT_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// MTH computed level by level, carrying an unpaired last node up unchanged: a different
/// algorithm that yields the RFC's tree for every size.
fn naive_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return merkle::empty_root();
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node_hash(l, r),
                [one] => *one,
                _ => unreachable!(),
            })
            .collect();
    }
    level[0]
}

fn leaves(n: usize, salt: u8) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(format!("entry {i} {salt}").as_bytes()))
        .collect()
}

#[test]
fn tree_heads_match_the_certificate_transparency_reference_roots() {
    let all = ct_leaves();
    for (n, want) in CT_ROOTS.iter().enumerate() {
        assert_eq!(hex::encode(root(&all[..n])), *want, "size {n}");
        assert_eq!(hex::encode(naive_root(&all[..n])), *want, "naive, size {n}");
    }
}

#[test]
fn proofs_match_the_certificate_transparency_reference_proofs() {
    let all = ct_leaves();
    let inclusion_0_of_8 = [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ];
    let got: Vec<String> = inclusion_proof(&all, 0)
        .unwrap()
        .iter()
        .map(hex::encode)
        .collect();
    assert_eq!(got, inclusion_0_of_8);
    let inclusion_5_of_8 = [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ];
    let got: Vec<String> = inclusion_proof(&all, 5)
        .unwrap()
        .iter()
        .map(hex::encode)
        .collect();
    assert_eq!(got, inclusion_5_of_8);
    let consistency_6_to_8 = [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ];
    let got: Vec<String> = consistency_proof(&all, 6)
        .unwrap()
        .iter()
        .map(hex::encode)
        .collect();
    assert_eq!(got, consistency_6_to_8);
    let proof = consistency_proof(&all[..5], 2).unwrap();
    assert_eq!(
        proof.iter().map(hex::encode).collect::<Vec<_>>(),
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ]
    );
    assert!(verify_consistency(
        2,
        5,
        &h(CT_ROOTS[2]),
        &h(CT_ROOTS[5]),
        &proof
    ));
}

#[test]
fn every_consistency_proof_between_small_trees_verifies_and_fails_for_other_roots() {
    let all = leaves(20, 0);
    for n in 0..=all.len() {
        for m in 0..=n {
            let proof = consistency_proof(&all[..n], m).unwrap();
            let (old, new) = (root(&all[..m]), root(&all[..n]));
            assert!(
                verify_consistency(m as u64, n as u64, &old, &new, &proof),
                "{m} -> {n}"
            );
            if m > 0 && m < n {
                // Sizes are bound by the signed head, roots and the path by the proof.
                let mut other = all[..n].to_vec();
                other[m - 1][0] ^= 1;
                let (bad_old, bad_new) = (root(&other[..m]), root(&other));
                assert!(!verify_consistency(
                    m as u64, n as u64, &bad_old, &new, &proof
                ));
                assert!(!verify_consistency(
                    m as u64, n as u64, &old, &bad_new, &proof
                ));
                let forged = consistency_proof(&other, m).unwrap();
                assert!(!verify_consistency(
                    m as u64, n as u64, &old, &bad_new, &forged
                ));
                assert!(!verify_consistency(
                    m as u64,
                    n as u64,
                    &old,
                    &new,
                    &proof[1..]
                ));
            }
        }
    }
    assert!(consistency_proof(&all[..3], 4).is_none());
    assert!(!verify_consistency(
        4,
        3,
        &root(&all[..4]),
        &root(&all[..3]),
        &[]
    ));
}

#[test]
fn subtrees_are_exact_for_small_logs_and_at_most_64_chunks_beyond() {
    assert!(subtree_ranges(0).is_empty());
    assert_eq!(subtree_ranges(3), [(0, 1), (1, 1), (2, 1)]);
    let r = subtree_ranges(64);
    assert!(r.len() == 64 && r.iter().all(|&(_, s)| s == 1));
    // 100 leaves: chunks of 2 (50 of them), nothing left over.
    assert_eq!(subtree_ranges(100).len(), 50);
    // 1000 leaves: 62 chunks of 16 cover 992; the tail of 8 is one node.
    let r = subtree_ranges(1000);
    assert_eq!(r.len(), 63);
    assert_eq!(r.last(), Some(&(992, 8)));
    for n in [1u64, 5, 63, 65, 129, 1000, 4097, 1 << 20, (1 << 20) + 12345] {
        let r = subtree_ranges(n);
        assert!(r.len() <= 64 + 64, "{n}: {}", r.len());
        let mut next = 0;
        for (start, size) in r {
            assert_eq!(start, next);
            assert!(size.is_power_of_two() && start % size == 0);
            next += size;
        }
        assert_eq!(next, n);
    }
}

#[test]
fn subtrees_that_do_not_hash_to_the_root_are_refused() {
    let l = leaves(10, 1);
    let mut pieces = subtrees(&l);
    assert_eq!(root_from_subtrees(10, &pieces), Some(root(&l)));
    assert_eq!(root_from_subtrees(11, &pieces), None);
    pieces[3].hash[0] ^= 1;
    assert_ne!(root_from_subtrees(10, &pieces), Some(root(&l)));
    pieces.pop();
    assert_eq!(root_from_subtrees(10, &pieces), None);
}

fn key(b: u8) -> SigningKey {
    SigningKey::from_seed(&[b; 32]).unwrap()
}

#[test]
fn a_signed_head_verifies_and_any_changed_field_does_not() {
    let k = key(7);
    let l = leaves(9, 2);
    let head = k.sign(9, &root(&l), 1_700_000_000_000, &subtrees(&l));
    let v = head.verify(None).unwrap();
    assert_eq!(v.tree_size, 9);
    assert_eq!(v.subtrees.as_deref(), Some(subtrees(&l).as_slice()));
    assert!(head.verify(Some(&k.public_key())).is_ok());

    let mut bigger = head.clone();
    bigger.tree_size = 8;
    assert_eq!(bigger.verify(None), Err(HeadError::BadSignature));
    let mut rooted = head.clone();
    rooted.root_hash = hex::encode(root(&l[..8]));
    assert_eq!(rooted.verify(None), Err(HeadError::BadSignature));
    let mut later = head.clone();
    later.timestamp_ms += 1;
    assert_eq!(later.verify(None), Err(HeadError::BadSignature));

    // Re-signed by another key: fine on its own, refused against the pinned key.
    let forged = key(8).sign(9, &root(&l), 1_700_000_000_000, &[]);
    assert!(forged.verify(None).is_ok());
    assert!(matches!(
        forged.verify(Some(&k.public_key())),
        Err(HeadError::NotPinnedKey { .. })
    ));
    // Another key's public key with the original key id.
    let mut swapped = head.clone();
    swapped.public_key = forged.public_key.clone();
    assert!(matches!(
        swapped.verify(None),
        Err(HeadError::KeyIdMismatch { .. })
    ));

    // Unsigned subtrees that lie are dropped, the head itself still verifies.
    let mut lying = head.clone();
    lying.subtrees[0].hash = hex::encode([0u8; 32]);
    assert_eq!(lying.verify(None).unwrap().subtrees, None);
}

#[test]
fn head_json_and_signed_bytes_are_stable() {
    let k = key(1);
    let head = k.sign(0, &merkle::empty_root(), 5, &[]);
    let text = serde_json::to_string(&head).unwrap();
    let back: SignedHead = serde_json::from_str(&text).unwrap();
    assert_eq!(back, head);
    assert!(serde_json::from_str::<SignedHead>(&text.replace("}", ",\"x\":1}")).is_err());
    assert_eq!(
        String::from_utf8(signing_bytes(3, &[0xab; 32], -1)).unwrap(),
        format!(
            "serin-audit-tree-head-v1\ntree_size 3\nroot_hash {}\ntimestamp_ms -1\n",
            "ab".repeat(32)
        )
    );
    assert_eq!(parse_public_key(&head.public_key), Ok(k.public_key()));
    assert!(parse_public_key("abc").is_err());
    assert!(SigningKey::from_key_file(&SigningKey::key_file_text(&[1; 32])).is_ok());
    assert!(SigningKey::from_key_file("not hex").is_err());
    assert!(!format!("{k:?}").contains(&hex::encode([1u8; 32])));
}

/// A change to the log, as an attacker with write access to the database could make it.
#[derive(Clone, Debug)]
enum Tamper {
    Modify(usize),
    Delete(usize),
    Insert(usize),
    Swap(usize),
    Truncate(usize),
}

fn apply(log: &[Hash], t: &Tamper) -> Vec<Hash> {
    let mut out = log.to_vec();
    match *t {
        Tamper::Modify(i) => out[i % log.len()][0] ^= 0x80,
        Tamper::Delete(i) => {
            out.remove(i % log.len());
        }
        Tamper::Insert(i) => out.insert(i % log.len(), leaf_hash(b"forged")),
        Tamper::Swap(i) => {
            let i = i % (log.len() - 1);
            out.swap(i, i + 1);
        }
        Tamper::Truncate(i) => out.truncate(i % log.len()),
    }
    out
}

/// The first index a tampering changes.
fn first_changed(t: &Tamper, n: usize) -> usize {
    match *t {
        Tamper::Modify(i) | Tamper::Delete(i) | Tamper::Insert(i) | Tamper::Truncate(i) => i % n,
        Tamper::Swap(i) => i % (n - 1),
    }
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        any::<usize>().prop_map(Tamper::Modify),
        any::<usize>().prop_map(Tamper::Delete),
        any::<usize>().prop_map(Tamper::Insert),
        any::<usize>().prop_map(Tamper::Swap),
        any::<usize>().prop_map(Tamper::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn root_agrees_with_the_bottom_up_tree(n in 0usize..300, salt: u8) {
        let l = leaves(n, salt);
        prop_assert_eq!(root(&l), naive_root(&l));
    }

    #[test]
    fn inclusion_proofs_verify_only_for_their_leaf_and_index(
        n in 1usize..150, i in any::<usize>(), salt: u8,
    ) {
        let l = leaves(n, salt);
        let i = i % n;
        let r = root(&l);
        let proof = inclusion_proof(&l, i).unwrap();
        prop_assert!(verify_inclusion(i as u64, n as u64, &l[i], &proof, &r));
        let mut other = l[i];
        other[31] ^= 1;
        prop_assert!(!verify_inclusion(i as u64, n as u64, &other, &proof, &r));
        if n > 1 {
            let j = (i + 1) % n;
            prop_assert!(!verify_inclusion(j as u64, n as u64, &l[i], &proof, &r));
            prop_assert!(!verify_inclusion(i as u64, n as u64, &l[j], &proof, &r));
        }
        prop_assert!(!verify_inclusion(n as u64, n as u64, &l[i], &proof, &r));
        if let Some((_, shorter)) = proof.split_last() {
            prop_assert!(!verify_inclusion(i as u64, n as u64, &l[i], shorter, &r));
        }
        prop_assert!(inclusion_proof(&l, n).is_none());
    }

    #[test]
    fn a_tampered_log_is_never_consistent_with_the_head_and_is_located(
        n in 2usize..200, grow in 0usize..40, t in tamper(), salt: u8,
    ) {
        let log = leaves(n, salt);
        let head_root = root(&log);
        let head_pieces = subtrees(&log);
        let mut later = apply(&log, &t);
        later.extend(leaves(grow, salt.wrapping_add(1)));
        let first = first_changed(&t, n);

        // The honest extension verifies; the tampered one cannot, whatever proof it offers.
        let mut honest = log.clone();
        honest.extend(leaves(grow, salt.wrapping_add(1)));
        let proof = consistency_proof(&honest, n).unwrap();
        prop_assert!(verify_consistency(n as u64, honest.len() as u64, &head_root, &root(&honest), &proof));
        if later.len() >= n {
            let proof = consistency_proof(&later, n).unwrap();
            prop_assert!(!verify_consistency(n as u64, later.len() as u64, &head_root, &root(&later), &proof));
            prop_assert_ne!(root(&later[..n]), head_root);
        }

        // The subtrees name the piece holding the first changed entry.
        let ranges = subtree_ranges(n as u64);
        let (start, size) = first_divergence(&head_pieces, &subtree_hashes(&later, &ranges)).unwrap();
        prop_assert!(start as usize <= first && first < (start + size) as usize, "{:?}", (start, size, first));
        if n <= 64 {
            prop_assert_eq!((start as usize, size), (first, 1));
        }
    }
}
