//! An immutable set of strings built in one go: the bytes of every member in one arena and an
//! open-addressing table of indices, so building it makes three allocations whatever its size
//! (a `HashSet<String>` makes one per member) and a lookup is one hash and, on a hit, one
//! byte comparison, whatever its size.

use std::hash::Hasher;

use rustc_hash::FxHasher;

#[derive(Clone, Debug, Default)]
pub(crate) struct StrSet {
    arena: String,
    /// (start, end, hash) of each member in `arena`.
    members: Vec<(usize, usize, u64)>,
    /// Power-of-two sized; 0 is empty, otherwise 1 + an index into `members`.
    slots: Vec<u32>,
}

#[inline]
fn hash(s: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(s.as_bytes());
    h.finish()
}

impl StrSet {
    /// Builds the set; `members` must be distinct (they come from a `BTreeSet`).
    pub(crate) fn new<'a, I>(members: I) -> StrSet
    where
        I: IntoIterator<Item = &'a String>,
        I::IntoIter: ExactSizeIterator,
    {
        let iter = members.into_iter();
        let n = iter.len();
        if n == 0 {
            return StrSet::default();
        }
        let mut set = StrSet {
            // One pass over the members (a `BTreeSet` is slow to walk); ids are short.
            arena: String::with_capacity(n * 16),
            members: Vec::with_capacity(n),
            slots: vec![0; (2 * n).next_power_of_two()],
        };
        let mask = set.slots.len() - 1;
        for s in iter {
            let h = hash(s);
            let start = set.arena.len();
            set.arena.push_str(s);
            set.members.push((start, set.arena.len(), h));
            let entry = u32::try_from(set.members.len()).unwrap_or(u32::MAX);
            let mut i = slot_of(h, mask);
            while let Some(slot) = set.slots.get_mut(i) {
                if *slot == 0 {
                    *slot = entry;
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        set
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    #[inline]
    pub(crate) fn contains(&self, s: &str) -> bool {
        if self.members.is_empty() {
            return false;
        }
        let h = hash(s);
        let mask = self.slots.len() - 1;
        let mut i = slot_of(h, mask);
        // The table is at most half full, so a probe always reaches an empty slot.
        loop {
            let Some(&slot) = self.slots.get(i) else {
                return false;
            };
            let Some(&(start, end, mh)) = (slot as usize)
                .checked_sub(1)
                .and_then(|m| self.members.get(m))
            else {
                return false;
            };
            if mh == h && self.arena.get(start..end) == Some(s) {
                return true;
            }
            i = (i + 1) & mask;
        }
    }
}

/// The high bits of an Fx hash are the well-mixed ones.
#[inline]
fn slot_of(h: u64, mask: usize) -> usize {
    (h.rotate_left(26) as usize) & mask
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn holds_exactly_its_members() {
        for n in [0usize, 1, 2, 3, 100, 1_000] {
            let members: BTreeSet<String> = (0..n).map(|i| format!("tenant-{i}")).collect();
            let set = StrSet::new(&members);
            assert_eq!(set.is_empty(), n == 0);
            for m in &members {
                assert!(set.contains(m), "{m}");
            }
            for i in n..n + 200 {
                assert!(!set.contains(&format!("tenant-{i}")));
            }
            assert!(!set.contains(""));
            assert!(!set.contains("tenant-"));
        }
        let odd: BTreeSet<String> = ["", "é", "a\u{0}b"].iter().map(|s| s.to_string()).collect();
        let set = StrSet::new(&odd);
        assert!(set.contains("") && set.contains("é") && set.contains("a\u{0}b"));
        assert!(!set.contains("a"));
    }
}
