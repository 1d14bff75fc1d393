//! An immutable set of strings built in one go: the bytes of every member in one arena and an
//! open-addressing table of indices, so building it makes a handful of allocations whatever its
//! size (a `HashSet<String>` makes one per member) and a lookup is one hash and, on a hit, one
//! byte comparison, whatever its size. It can be read straight from a JSON array, which is how
//! the SDK loads tenant lists without a `String` per tenant.

use std::cell::Cell;
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
    /// Builds the set from `members`; duplicates are kept once.
    pub(crate) fn new<I>(members: I) -> StrSet
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut b = StrSetBuilder::default();
        for m in members {
            b.push(m.as_ref());
        }
        b.finish()
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

impl StrSet {
    /// The members in the order they were added (duplicates skipped).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.members
            .iter()
            .filter_map(|&(start, end, _)| self.arena.get(start..end))
    }
}

/// Collects members into the arena first and builds the table once their number is known,
/// so a list read from JSON goes straight into the set: one copy of each string into the
/// arena, no `String` per member, no intermediate collection.
#[derive(Default)]
pub(crate) struct StrSetBuilder {
    arena: String,
    members: Vec<(usize, usize, u64)>,
}

impl StrSetBuilder {
    pub(crate) fn push(&mut self, s: &str) {
        let start = self.arena.len();
        self.arena.push_str(s);
        self.members.push((start, self.arena.len(), hash(s)));
    }

    pub(crate) fn finish(self) -> StrSet {
        let StrSetBuilder { arena, members } = self;
        build(arena, &members)
    }

    /// As [`finish`](Self::finish), leaving the builder's buffers to be reused: the set gets
    /// an exactly sized copy of the arena.
    fn finish_copy(&self) -> StrSet {
        if self.members.is_empty() {
            return StrSet::default();
        }
        build(self.arena.as_str().to_owned(), &self.members)
    }
}

/// Largest arena the scratch builder keeps between lists (a few hundred tenant ids).
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

thread_local! {
    static SCRATCH: Cell<StrSetBuilder> = Cell::new(StrSetBuilder::default());
}

fn build(arena: String, members: &[(usize, usize, u64)]) -> StrSet {
    if members.is_empty() {
        return StrSet::default();
    }
    let mut slots = vec![0u32; (2 * members.len()).next_power_of_two()];
    let mask = slots.len() - 1;
    // Only the first of equal members gets a slot; later ones stay unreferenced in the
    // arena, so a list with duplicates behaves like the set it denotes.
    let mut kept = Vec::with_capacity(members.len());
    for &(start, end, h) in members {
        let mut i = slot_of(h, mask);
        while let Some(slot) = slots.get_mut(i) {
            if *slot == 0 {
                kept.push((start, end, h));
                *slot = u32::try_from(kept.len()).unwrap_or(u32::MAX);
                break;
            }
            let same = (*slot as usize)
                .checked_sub(1)
                .and_then(|m| kept.get(m))
                .is_some_and(|&(s, e, mh): &(usize, usize, u64)| {
                    mh == h && arena.get(s..e) == arena.get(start..end)
                });
            if same {
                break;
            }
            i = (i + 1) & mask;
        }
    }
    StrSet {
        arena,
        members: kept,
        slots,
    }
}

/// A JSON array of strings read straight into a set (see [`StrSetBuilder`]).
impl<'de> serde::Deserialize<'de> for StrSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StrSet, D::Error> {
        struct Seq;
        impl<'de> serde::de::Visitor<'de> for Seq {
            type Value = StrSet;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StrSet, A::Error> {
                // The lists are read into a per-thread scratch builder that keeps its
                // capacity, then copied once into exactly sized buffers: growing a fresh
                // builder member by member cost a dozen reallocations per list.
                let mut b = SCRATCH.with(Cell::take);
                b.arena.clear();
                b.members.clear();
                let read = loop {
                    match seq.next_element_seed(Push(&mut b)) {
                        Ok(Some(())) => {}
                        Ok(None) => break Ok(b.finish_copy()),
                        Err(e) => break Err(e),
                    }
                };
                // A huge list's buffers are not worth pinning to the thread for good.
                if b.arena.capacity() <= SCRATCH_KEEP_BYTES {
                    SCRATCH.with(|c| c.set(b));
                }
                read
            }
        }
        struct Push<'b>(&'b mut StrSetBuilder);
        impl<'de> serde::de::DeserializeSeed<'de> for Push<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_str(self)
            }
        }
        impl<'de> serde::de::Visitor<'de> for Push<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            // Borrowed or unescaped into a scratch buffer, the text is copied into the arena
            // at once, so no member is ever allocated on its own.
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
                self.0.push(s);
                Ok(())
            }
        }
        d.deserialize_seq(Seq)
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

    #[test]
    fn reads_a_json_array_and_keeps_duplicates_once() {
        let set: StrSet = serde_json::from_str(r#"["b", "a", "b", "c\u0041", ""]"#).unwrap();
        let mut members: Vec<&str> = set.iter().collect();
        members.sort_unstable();
        assert_eq!(members, ["", "a", "b", "cA"]);
        assert!(set.contains("cA") && set.contains("b") && !set.contains("c"));
        assert!(serde_json::from_str::<StrSet>("[1]").is_err());
        assert!(serde_json::from_str::<StrSet>("null").is_err());
        assert!(serde_json::from_str::<StrSet>(r#"["a""#).is_err());
        let empty: StrSet = serde_json::from_str("[]").unwrap();
        assert!(empty.is_empty() && !empty.contains(""));
    }
}
