//! Security identities: the numbers and label lists that stand for "who" a remote is.
//!
//! Owns the reserved identities and the allocation of numbers to endpoint label sets, stable
//! from one snapshot to the next. It must not know about policies or addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::selector::LabelSet;

/// The identity of the local host.
pub(crate) const HOST_ID: u32 = 1;
/// The identity of every address outside the cluster.
pub(crate) const WORLD_ID: u32 = 2;
/// The first number given to an endpoint label set.
const FIRST_ENDPOINT_ID: u32 = 256;

/// A security identity: a number and the labels it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The number, stable across snapshots for the same labels: 1 is the host, 2 the world,
    /// endpoint label sets count from 256.
    pub id: u32,
    /// The labels as `key=value`, sorted; `reserved:host` or `reserved:world` for the reserved
    /// identities.
    pub labels: Arc<[String]>,
}

impl Identity {
    /// The identity of the local host.
    pub(crate) fn host() -> Identity {
        Identity {
            id: HOST_ID,
            labels: Arc::from(vec!["reserved:host".to_owned()]),
        }
    }

    /// The identity of addresses outside the cluster.
    pub(crate) fn world() -> Identity {
        Identity {
            id: WORLD_ID,
            labels: Arc::from(vec!["reserved:world".to_owned()]),
        }
    }

    /// The view of the identity that selectors match against.
    pub(crate) fn view(&self, labels: &BTreeMap<String, String>) -> IdentityView {
        IdentityView {
            id: self.id,
            labels: LabelSet {
                labels: labels.clone(),
                reserved: false,
            },
        }
    }

    /// The selector view of a reserved identity: its single `reserved:<name>` label.
    pub(crate) fn reserved_view(&self) -> IdentityView {
        let labels = self
            .labels
            .iter()
            .map(|l| (l.clone(), String::new()))
            .collect();
        IdentityView {
            id: self.id,
            labels: LabelSet {
                labels,
                reserved: true,
            },
        }
    }
}

/// An identity as selectors see it, used while compiling a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct IdentityView {
    /// The identity's number.
    pub id: u32,
    /// Its labels.
    pub labels: LabelSet,
}

/// The numbers given to the endpoint label sets of one snapshot, and the next free number.
#[derive(Debug, Clone)]
pub(crate) struct IdentityTable {
    ids: BTreeMap<Vec<String>, u32>,
    next: u32,
}

impl IdentityTable {
    /// Numbers `sets`, keeping the number `previous` gave a set and giving each new set a
    /// number never used before. Fails only when the numbers run out.
    pub(crate) fn allocate(
        previous: Option<&IdentityTable>,
        sets: BTreeSet<Vec<String>>,
    ) -> Option<IdentityTable> {
        let mut next = previous.map_or(FIRST_ENDPOINT_ID, |p| p.next);
        let mut ids = BTreeMap::new();
        let mut fresh = Vec::new();
        for set in sets {
            match previous.and_then(|p| p.ids.get(&set)) {
                Some(&id) => {
                    ids.insert(set, id);
                }
                None => fresh.push(set),
            }
        }
        for set in fresh {
            ids.insert(set, next);
            next = next.checked_add(1)?;
        }
        Some(IdentityTable { ids, next })
    }

    /// The number of a label set the table was built with.
    pub(crate) fn id(&self, labels: &[String]) -> Option<u32> {
        self.ids.get(labels).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(list: &[&[&str]]) -> BTreeSet<Vec<String>> {
        list.iter()
            .map(|s| s.iter().map(|l| l.to_string()).collect())
            .collect()
    }

    #[test]
    fn numbers_are_stable_and_never_reused() {
        let first = IdentityTable::allocate(None, sets(&[&["app=a"], &["app=b"]])).unwrap();
        assert_eq!(first.id(&["app=a".into()]), Some(256));
        assert_eq!(first.id(&["app=b".into()]), Some(257));
        let second =
            IdentityTable::allocate(Some(&first), sets(&[&["app=0"], &["app=b"]])).unwrap();
        assert_eq!(second.id(&["app=b".into()]), Some(257));
        assert_eq!(second.id(&["app=0".into()]), Some(258));
        assert_eq!(second.id(&["app=a".into()]), None);
        let third = IdentityTable::allocate(Some(&second), sets(&[&["app=a"]])).unwrap();
        assert_eq!(third.id(&["app=a".into()]), Some(259));
    }
}
