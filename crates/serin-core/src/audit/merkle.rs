//! The Merkle tree of RFC 9162 (Certificate Transparency v2) §2.1 over byte-string leaves.
//!
//! - `MTH({}) = SHA-256()`, leaf `SHA-256(0x00 ‖ d)`, node `SHA-256(0x01 ‖ left ‖ right)`; a tree of
//!   `n > 1` leaves splits at `k`, the largest power of two below `n`.
//! - Inclusion proofs (§2.1.3) and consistency proofs (§2.1.4) with the RFC's verification
//!   algorithms, which work on sizes and indices only and never see the leaves.
//! - [`subtrees`]: a short list of the tree's own nodes that together cover every leaf. They hash
//!   up to the root, so a signed root authenticates them; kept beside a signed head they let a
//!   verifier name where a later log first differs (one leaf exactly while the log is small, a
//!   range of at most `n / 64` leaves beyond).

use sha2::{Digest, Sha256};

/// A SHA-256 output.
pub type Hash = [u8; 32];

/// How many aligned chunks [`subtree_ranges`] aims for.
const MAX_CHUNKS: u64 = 64;

/// `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree, `SHA-256()`.
pub fn empty_root() -> Hash {
    Sha256::new().finalize().into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    let mut k = 1usize;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// `MTH(D[n])` over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let (left, right) = leaves.split_at(split_point(leaves.len()));
            node_hash(&root(left), &root(right))
        }
    }
}

/// `PATH(index, D[n])`: the inclusion proof of leaf `index`; None when `index >= n`.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    path_into(leaves, index, &mut path);
    Some(path)
}

fn path_into(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split_point(leaves.len());
    let (left, right) = leaves.split_at(k);
    if m < k {
        path_into(left, m, out);
        out.push(root(right));
    } else {
        path_into(right, m - k, out);
        out.push(root(left));
    }
}

/// RFC 9162 §2.1.3.2: does `proof` show `leaf` at `index` in the tree of `size` with `root`?
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// `PROOF(old_size, D[n])`: the consistency proof from the tree of the first `old_size` leaves to
/// the tree of all of them. Empty when `old_size` is 0 or `n` (nothing to prove); None when
/// `old_size > n`.
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Option<Vec<Hash>> {
    if old_size > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < leaves.len() {
        subproof_into(old_size, leaves, true, &mut proof);
    }
    Some(proof)
}

fn subproof_into(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split_point(n);
    let (left, right) = leaves.split_at(k);
    if m <= k {
        subproof_into(m, left, complete, out);
        out.push(root(right));
    } else {
        subproof_into(m - k, right, false, out);
        out.push(root(left));
    }
}

/// RFC 9162 §2.1.4.2: does `proof` show the tree (`new_size`, `new_root`) extends the tree
/// (`old_size`, `old_root`), i.e. keeps its first `old_size` leaves unchanged and in order?
///
/// Equal sizes need an empty proof and equal roots; any tree extends the empty one.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == empty_root();
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    // A power-of-two old tree is itself a node of the new one; the RFC prepends its root.
    let (mut fr, mut sr, path) = if old_size.is_power_of_two() {
        (*old_root, *old_root, proof)
    } else {
        (*first, *first, rest)
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    for c in path {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *old_root && sr == *new_root && snode == 0
}

/// One node of the tree: the root of leaves `start .. start + size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subtree {
    pub start: u64,
    pub size: u64,
    pub hash: Hash,
}

/// The `(start, size)` of the nodes [`subtrees`] keeps for a tree of `n` leaves: aligned chunks of
/// `c` leaves (the smallest power of two giving at most 64 chunks), then the tail below `c` split
/// like the tree's right edge into perfect subtrees, largest first. Every piece is a node of the
/// RFC tree, so the pieces hash up to its root.
pub fn subtree_ranges(n: u64) -> Vec<(u64, u64)> {
    let mut chunk = 1u64;
    while n.div_ceil(chunk) > MAX_CHUNKS {
        chunk <<= 1;
    }
    let full = n / chunk;
    let mut out: Vec<(u64, u64)> = (0..full).map(|i| (i * chunk, chunk)).collect();
    let mut start = full * chunk;
    let mut rest = n - start;
    while rest > 0 {
        let piece = 1u64 << (63 - rest.leading_zeros());
        out.push((start, piece));
        start += piece;
        rest -= piece;
    }
    out
}

/// The nodes named by [`subtree_ranges`] for the tree over `leaves`.
pub fn subtrees(leaves: &[Hash]) -> Vec<Subtree> {
    let n = u64::try_from(leaves.len()).unwrap_or(u64::MAX);
    subtree_hashes(leaves, &subtree_ranges(n))
        .into_iter()
        .zip(subtree_ranges(n))
        .filter_map(|(hash, (start, size))| hash.map(|hash| Subtree { start, size, hash }))
        .collect()
}

/// The root of each `(start, size)` range over `leaves`; None for a range that is empty or
/// reaches past the last leaf.
pub fn subtree_hashes(leaves: &[Hash], ranges: &[(u64, u64)]) -> Vec<Option<Hash>> {
    ranges
        .iter()
        .map(|&(start, size)| {
            let start = usize::try_from(start).ok()?;
            let end = start.checked_add(usize::try_from(size).ok()?)?;
            if size == 0 {
                return None;
            }
            leaves.get(start..end).map(root)
        })
        .collect()
}

/// The root of the tree of `size` leaves rebuilt from `pieces`, which must be exactly
/// [`subtree_ranges`]`(size)` in order; None if they are not.
pub fn root_from_subtrees(size: u64, pieces: &[Subtree]) -> Option<Hash> {
    let ranges = subtree_ranges(size);
    if ranges.len() != pieces.len()
        || ranges
            .iter()
            .zip(pieces)
            .any(|(&(start, len), p)| p.start != start || p.size != len)
    {
        return None;
    }
    if size == 0 {
        return Some(empty_root());
    }
    rebuild(0, size, pieces)
}

/// MTH of leaves `lo .. hi`, using a piece wherever one covers exactly that node.
fn rebuild(lo: u64, hi: u64, pieces: &[Subtree]) -> Option<Hash> {
    if let Some(p) = pieces.iter().find(|p| p.start == lo && p.size == hi - lo) {
        return Some(p.hash);
    }
    if hi - lo <= 1 {
        return None;
    }
    let n = usize::try_from(hi - lo).ok()?;
    let k = u64::try_from(split_point(n)).ok()?;
    Some(node_hash(
        &rebuild(lo, lo + k, pieces)?,
        &rebuild(lo + k, hi, pieces)?,
    ))
}

/// The first of the `trusted` pieces whose hash `current` (the same ranges over today's log, None
/// where the log no longer reaches) does not reproduce, as `(start, size)`.
pub fn first_divergence(trusted: &[Subtree], current: &[Option<Hash>]) -> Option<(u64, u64)> {
    trusted
        .iter()
        .enumerate()
        .find(|(i, t)| current.get(*i).copied().flatten() != Some(t.hash))
        .map(|(_, t)| (t.start, t.size))
}
