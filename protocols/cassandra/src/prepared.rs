//! The prepared statements a connection knows: what each prepared id was checked as, bounded,
//! forgetting the least recently used when full.
//!
//! A use (an EXECUTE or a batch entry) moves an id to the most recent end in constant time and
//! without allocating: entries sit in a slab linked in order of use. A forgotten id is answered
//! like one never prepared (the driver prepares it again). This module knows nothing of frames.

use std::collections::HashMap;

/// Marks the end of the use order.
const NONE: usize = usize::MAX;

/// A bounded map from prepared ids to `V`, least recently used first out.
#[derive(Debug)]
pub(crate) struct Prepared<V> {
    index: HashMap<Box<[u8]>, usize>,
    entries: Vec<Entry<V>>,
    /// The least and the most recently used entries.
    oldest: usize,
    newest: usize,
    capacity: usize,
}

#[derive(Debug)]
struct Entry<V> {
    id: Box<[u8]>,
    value: V,
    /// The entries used just before and just after this one.
    older: usize,
    newer: usize,
}

impl<V> Prepared<V> {
    /// An empty map holding at most `capacity` ids (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Prepared {
            index: HashMap::new(),
            entries: Vec::new(),
            oldest: NONE,
            newest: NONE,
            capacity: capacity.max(1),
        }
    }

    /// The value of `id`, which becomes the most recently used.
    pub(crate) fn get(&mut self, id: &[u8]) -> Option<&V> {
        let at = *self.index.get(id)?;
        self.unlink(at);
        self.link_newest(at);
        Some(&self.entries[at].value)
    }

    /// Remembers `value` for `id` as the most recently used, forgetting the least recently used
    /// id when full.
    pub(crate) fn insert(&mut self, id: &[u8], value: V) {
        if let Some(&at) = self.index.get(id) {
            self.entries[at].value = value;
            self.unlink(at);
            self.link_newest(at);
            return;
        }
        let id: Box<[u8]> = id.into();
        let at = if self.entries.len() < self.capacity {
            self.entries.push(Entry {
                id: id.clone(),
                value,
                older: NONE,
                newer: NONE,
            });
            self.entries.len() - 1
        } else {
            let at = self.oldest;
            self.unlink(at);
            let entry = &mut self.entries[at];
            self.index.remove(&entry.id);
            entry.id = id.clone();
            entry.value = value;
            at
        };
        self.index.insert(id, at);
        self.link_newest(at);
    }

    fn unlink(&mut self, at: usize) {
        let (older, newer) = (self.entries[at].older, self.entries[at].newer);
        match older {
            NONE => self.oldest = newer,
            older => self.entries[older].newer = newer,
        }
        match newer {
            NONE => self.newest = older,
            newer => self.entries[newer].older = older,
        }
    }

    fn link_newest(&mut self, at: usize) {
        self.entries[at].older = self.newest;
        self.entries[at].newer = NONE;
        match self.newest {
            NONE => self.oldest = at,
            newest => self.entries[newest].newer = at,
        }
        self.newest = at;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_least_recently_used_id_is_forgotten_first() {
        let mut prepared = Prepared::new(2);
        prepared.insert(b"a", 1);
        prepared.insert(b"b", 2);
        assert_eq!(prepared.get(b"a"), Some(&1));
        prepared.insert(b"c", 3);
        assert_eq!(prepared.get(b"b"), None);
        assert_eq!(prepared.get(b"a"), Some(&1));
        assert_eq!(prepared.get(b"c"), Some(&3));
        prepared.insert(b"c", 4);
        prepared.insert(b"d", 5);
        assert_eq!(prepared.get(b"a"), None);
        assert_eq!(prepared.get(b"c"), Some(&4));
        assert_eq!(prepared.get(b"d"), Some(&5));
        assert_eq!(prepared.index.len(), 2);
    }

    proptest! {
        /// Whatever the uses, the map holds exactly the ids a plain use-ordered list would.
        #[test]
        fn it_agrees_with_a_use_ordered_list(
            capacity in 1usize..5,
            steps in proptest::collection::vec((any::<bool>(), 0u8..8), 0..60),
        ) {
            let mut prepared = Prepared::new(capacity);
            let mut model: VecDeque<(u8, usize)> = VecDeque::new();
            for (i, (insert, id)) in steps.into_iter().enumerate() {
                let position = model.iter().position(|&(known, _)| known == id);
                if insert {
                    prepared.insert(&[id], i);
                    if let Some(p) = position {
                        model.remove(p);
                    } else if model.len() == capacity {
                        model.pop_front();
                    }
                    model.push_back((id, i));
                } else {
                    let expected = position.map(|p| {
                        let entry = model.remove(p).unwrap();
                        model.push_back(entry);
                        entry.1
                    });
                    prop_assert_eq!(prepared.get(&[id]).copied(), expected);
                }
                prop_assert_eq!(prepared.index.len(), model.len());
                prop_assert_eq!(prepared.entries.len(), model.len());
            }
        }
    }
}
