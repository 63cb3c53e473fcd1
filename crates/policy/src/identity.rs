//! Security identities: the numbers and label lists that stand for "who" a remote is.
//!
//! Owns the reserved identities and the numbers of endpoint label sets: allocated here, stable
//! from one snapshot to the next, or taken as a cluster gives them (checked, never completed
//! with local numbers). It must not know about policies or addresses.

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

    /// Takes the numbers of `sets` from `numbers` (the cluster's): an error naming a set left
    /// out, a number below 256 (reserved), or a number given to two of the sets.
    pub(crate) fn given(
        numbers: &BTreeMap<Vec<String>, u32>,
        sets: BTreeSet<Vec<String>>,
    ) -> Result<IdentityTable, String> {
        let mut ids = BTreeMap::new();
        let mut owners: BTreeMap<u32, &Vec<String>> = BTreeMap::new();
        let mut next = FIRST_ENDPOINT_ID;
        for set in &sets {
            let Some(&id) = numbers.get(set) else {
                return Err(format!(
                    "labels {set:?} have no identity number in the cluster"
                ));
            };
            if id < FIRST_ENDPOINT_ID {
                return Err(format!(
                    "labels {set:?}: identity {id} is reserved, endpoints count from \
                     {FIRST_ENDPOINT_ID}"
                ));
            }
            if let Some(other) = owners.insert(id, set) {
                return Err(format!(
                    "identity {id} is given to both labels {other:?} and {set:?}"
                ));
            }
            next = next.max(id.saturating_add(1));
        }
        for set in sets {
            let id = numbers[&set];
            ids.insert(set, id);
        }
        Ok(IdentityTable { ids, next })
    }

    /// The number of a label set the table was built with.
    pub(crate) fn id(&self, labels: &[String]) -> Option<u32> {
        self.ids.get(labels).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_numbers_are_taken_as_they_are_and_checked() {
        let numbers: BTreeMap<Vec<String>, u32> = [
            (vec!["app=a".to_owned()], 300),
            (vec!["app=b".to_owned()], 257),
            (vec!["app=c".to_owned()], 300),
            (vec!["app=r".to_owned()], 2),
        ]
        .into();
        let table = IdentityTable::given(&numbers, sets(&[&["app=a"], &["app=b"]])).unwrap();
        assert_eq!(table.id(&["app=a".into()]), Some(300));
        assert_eq!(table.id(&["app=b".into()]), Some(257));
        assert_eq!(
            IdentityTable::given(&numbers, sets(&[&["app=x"]])).unwrap_err(),
            r#"labels ["app=x"] have no identity number in the cluster"#
        );
        assert_eq!(
            IdentityTable::given(&numbers, sets(&[&["app=a"], &["app=c"]])).unwrap_err(),
            r#"identity 300 is given to both labels ["app=a"] and ["app=c"]"#
        );
        assert!(IdentityTable::given(&numbers, sets(&[&["app=r"]]))
            .unwrap_err()
            .contains("identity 2 is reserved"));
    }

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
