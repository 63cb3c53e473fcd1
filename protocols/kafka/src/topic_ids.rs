//! The names of the topic ids a broker gave out, learned from the Metadata responses (v10+)
//! the proxy passes and shared by every connection to the same upstream, so that requests
//! naming topics by id (Fetch v13+, and the other APIs [`TopicRef::Id`] lists) are judged by
//! the topic's name.
//!
//! Only a response the broker sent to an allowed Metadata request teaches (the parser asks
//! [`crate::pending`] which response that is, by its place in the response order, never by a
//! correlation id a client chose). An id never learned stays an id, and a request naming it
//! is judged as naming an unknown topic. A connection passes again unread the response it
//! last learned from while the map has not changed since ([`LastLearned`]), and the map is
//! written only when a response names an id it does not hold with that name. This module
//! reads a Metadata response up to its topics' ids and keeps the map; it decides nothing.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use crate::topics::TopicRef;
use crate::wire::{Reader, Uuid, WireError};

/// Most ids kept per upstream; past it the map starts anew (ids are learned again from the
/// next Metadata responses, and unknown until then).
pub const MAX_TOPICS: usize = 100_000;

/// Most upstreams whose maps are kept while no connection uses them.
pub const MAX_UPSTREAMS: usize = 1024;

/// The first Metadata version whose response carries topic ids.
pub const FIRST_VERSION_WITH_IDS: i16 = 10;

/// The name of each topic id learned.
type Names = HashMap<Uuid, Box<[u8]>, IdHashing>;

/// Hashes topic ids. Brokers give them out at random (UUID v4), so a multiply-fold of their
/// two halves with a key drawn for each map spreads them as well as SipHash does, for a
/// fraction of its work; only ids a broker's Metadata response names are stored.
#[derive(Debug, Clone)]
struct IdHashing {
    key: u64,
}

impl Default for IdHashing {
    fn default() -> Self {
        IdHashing {
            key: RandomState::new().hash_one(0x6b61_666b_6120_6964_u64),
        }
    }
}

impl BuildHasher for IdHashing {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher { hash: self.key }
    }
}

/// The hasher [`IdHashing`] builds.
#[derive(Debug)]
struct IdHasher {
    hash: u64,
}

impl IdHasher {
    /// Folds `word` into the hash: the high and low halves of a 128-bit product, xored.
    #[inline]
    fn mix(&mut self, word: u64) {
        const ODD: u64 = 0x9e37_79b9_7f4a_7c15;
        let product = u128::from(self.hash ^ word) * u128::from(ODD);
        self.hash = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// The topic names of one upstream, by id.
#[derive(Debug, Default)]
pub struct TopicIds {
    names: RwLock<Names>,
    /// How many times `names` changed: raised under its write lock, read under either lock.
    changes: AtomicU64,
}

/// The longest response (after its correlation id) a connection remembers having learned
/// from, to pass the same response again unread.
const MAX_REMEMBERED: usize = 16 * 1024;

/// The Metadata response a connection last learned from, and the map's change count right
/// after it did: the same response (after its correlation id) at the same count teaches
/// nothing new, as the map still holds all it taught.
#[derive(Debug, Default)]
pub struct LastLearned {
    version: i16,
    bytes: Vec<u8>,
    changes: Option<u64>,
}

impl TopicIds {
    /// Learns the ids of the topics in `response`, a Metadata response of `version` (a whole
    /// frame without its 4-byte length, header included). Versions before 10 carry no ids and
    /// teach nothing; topics with an error or without a name are skipped. A response that
    /// does not follow its definition teaches what was read before the fault.
    pub fn learn(&self, response: &[u8], version: i16) -> Result<(), WireError> {
        self.learn_counting(response, version).0
    }

    /// [`TopicIds::learn`], unless `last` is the same response and the map has not changed
    /// since it was learned; remembers `response` in `last` when it teaches, or forgets.
    pub fn learn_new(
        &self,
        response: &[u8],
        version: i16,
        last: &mut LastLearned,
    ) -> Result<(), WireError> {
        let after_correlation_id = response.get(4..).unwrap_or_default();
        if last
            .changes
            .is_some_and(|changes| changes == self.changes.load(Ordering::Acquire))
            && last.version == version
            && last.bytes == after_correlation_id
        {
            return Ok(());
        }
        let (result, changes) = self.learn_counting(response, version);
        last.bytes.clear();
        last.changes = None;
        if result.is_ok() && after_correlation_id.len() <= MAX_REMEMBERED {
            last.bytes.extend_from_slice(after_correlation_id);
            last.version = version;
            last.changes = Some(changes);
        }
        result
    }

    /// [`TopicIds::learn`], and the map's change count once it has: the names are looked up
    /// under the read lock, and the write lock taken only when the response names a topic
    /// the map does not hold by that id and name.
    fn learn_counting(&self, response: &[u8], version: i16) -> (Result<(), WireError>, u64) {
        if version < FIRST_VERSION_WITH_IDS {
            return (Ok(()), self.changes.load(Ordering::Acquire));
        }
        let mut new = false;
        let (read, changes) = {
            let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
            let read = each_named_topic(response, |id, name| {
                new |= names.get(&id).is_none_or(|known| **known != *name);
            });
            (read, self.changes.load(Ordering::Acquire))
        };
        if !new {
            return (read, changes);
        }
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        // The same bytes read again, to the same fault if any.
        let _ = each_named_topic(response, |id, name| {
            if names.get(&id).is_some_and(|known| **known == *name) {
                return;
            }
            if names.len() >= MAX_TOPICS {
                names.clear();
            }
            names.insert(id, name.into());
        });
        let changes = self.changes.fetch_add(1, Ordering::AcqRel) + 1;
        (read, changes)
    }

    /// The map as it is now, to resolve the topics of one request.
    pub fn known(&self) -> Known<'_> {
        Known(Some(
            self.names.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Reads a Metadata response of a version with ids (10+, all flexible) up to its topics,
/// and hands the id and name of each topic without an error, named and with an id, to `each`.
fn each_named_topic<'a>(
    response: &'a [u8],
    mut each: impl FnMut(Uuid, &'a [u8]),
) -> Result<(), WireError> {
    // Every version with ids is flexible: response header v1, compact fields.
    let mut r = Reader::new(response, true);
    r.i32("the correlation id")?;
    r.tagged_fields()?;
    r.i32("the throttle time")?;
    for _ in 0..r.array_len("the brokers")? {
        r.i32("a node id")?;
        r.string("a host")?;
        r.i32("a port")?;
        r.nullable_string("a rack")?;
        r.tagged_fields()?;
    }
    r.nullable_string("the cluster id")?;
    r.i32("the controller id")?;
    for _ in 0..r.array_len("the topics")? {
        let error = r.i16("a topic's error code")?;
        let name = r.nullable_string("a topic name")?;
        let id = r.uuid("a topic id")?;
        r.bool("is internal")?;
        for _ in 0..r.array_len("the partitions")? {
            r.i16("a partition's error code")?;
            r.i32("a partition index")?;
            r.i32("a leader id")?;
            r.i32("a leader epoch")?;
            r.skip_array(4, "the replicas")?;
            r.skip_array(4, "the in-sync replicas")?;
            r.skip_array(4, "the offline replicas")?;
            r.tagged_fields()?;
        }
        r.i32("the topic's authorized operations")?;
        r.tagged_fields()?;
        match name {
            Some(name) if error == 0 && id != [0; 16] => each(id, name),
            _ => {}
        }
    }
    Ok(())
}

/// A read view of the learned names, or none (for a request that names no topic by id).
#[derive(Debug)]
pub struct Known<'m>(Option<RwLockReadGuard<'m, Names>>);

impl<'m> Known<'m> {
    /// The names of `ids`, or none: the map is locked only when a request names ids.
    pub fn of(ids: Option<&'m TopicIds>) -> Known<'m> {
        ids.map_or(Known(None), TopicIds::known)
    }

    /// `topic` by name: its own name, or the learned name of its id; an unknown id (or any id
    /// without a view) as is.
    #[inline]
    pub fn resolve<'t>(&'t self, topic: TopicRef<'t>) -> TopicRef<'t> {
        match (topic, &self.0) {
            (TopicRef::Id(id), Some(names)) => {
                names.get(&id).map_or(topic, |name| TopicRef::Name(name))
            }
            (named, _) => named,
        }
    }
}

/// The maps of every upstream, by address: one Kafka cluster's ids are the same on every
/// connection to it.
#[derive(Debug, Default)]
pub struct Clusters(Mutex<HashMap<SocketAddr, Arc<TopicIds>>>);

impl Clusters {
    /// The map of the upstream at `address`.
    pub fn of(&self, address: SocketAddr) -> Arc<TopicIds> {
        let mut clusters = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !clusters.contains_key(&address) && clusters.len() >= MAX_UPSTREAMS {
            clusters.retain(|_, ids| Arc::strong_count(ids) > 1);
        }
        Arc::clone(clusters.entry(address).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Metadata response of `version` (10 to 13), written byte by byte from Kafka's
    /// `MetadataResponse.json`: one broker, then each topic with its error code, name and id,
    /// one partition with replicas [1] and isr [1].
    fn response(version: i16, topics: &[(i16, Option<&str>, [u8; 16])]) -> Vec<u8> {
        let mut out = 7i32.to_be_bytes().to_vec(); // correlation id
        out.push(0); // header tagged fields
        out.extend_from_slice(&0i32.to_be_bytes()); // throttle time
        out.push(2); // one broker
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(b"\x0a127.0.0.1");
        out.extend_from_slice(&9092i32.to_be_bytes());
        out.push(0); // rack: null
        out.push(0);
        out.extend_from_slice(b"\x08cluster"); // cluster id
        out.extend_from_slice(&1i32.to_be_bytes()); // controller
        out.push(topics.len() as u8 + 1);
        for (error, name, id) in topics {
            out.extend_from_slice(&error.to_be_bytes());
            match name {
                Some(name) => {
                    out.push(name.len() as u8 + 1);
                    out.extend_from_slice(name.as_bytes());
                }
                None => out.push(0),
            }
            out.extend_from_slice(id);
            out.push(0); // is internal
            out.push(2); // one partition
            out.extend_from_slice(&0i16.to_be_bytes());
            out.extend_from_slice(&0i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&0i32.to_be_bytes());
            out.extend_from_slice(b"\x02\x00\x00\x00\x01"); // replicas
            out.extend_from_slice(b"\x02\x00\x00\x00\x01"); // isr
            out.push(1); // offline replicas: none
            out.push(0);
            out.extend_from_slice(&i32::MIN.to_be_bytes()); // authorized operations
            out.push(0);
        }
        if version <= 10 {
            out.extend_from_slice(&i32::MIN.to_be_bytes()); // cluster authorized operations
        }
        if version >= 13 {
            out.extend_from_slice(&0i16.to_be_bytes());
        }
        out.push(0);
        out
    }

    fn name(ids: &TopicIds, id: [u8; 16]) -> Option<Vec<u8>> {
        match ids.known().resolve(TopicRef::Id(id)) {
            TopicRef::Name(name) => Some(name.to_vec()),
            TopicRef::Id(_) | TopicRef::Any => None,
        }
    }

    #[test]
    fn responses_with_ids_teach_the_names_of_the_topics_without_error() {
        for version in 10..=13 {
            let ids = TopicIds::default();
            let topics = [
                (0, Some("empire-announce"), [1; 16]),
                (3, Some("missing"), [2; 16]),
                (0, None, [3; 16]),
                (0, Some("no-id"), [0; 16]),
                (0, Some("deathstar-plans"), [4; 16]),
            ];
            ids.learn(&response(version, &topics), version).unwrap();
            assert_eq!(
                name(&ids, [1; 16]).as_deref(),
                Some(&b"empire-announce"[..])
            );
            assert_eq!(
                name(&ids, [4; 16]).as_deref(),
                Some(&b"deathstar-plans"[..])
            );
            for unknown in [[2; 16], [3; 16], [0; 16], [9; 16]] {
                assert_eq!(name(&ids, unknown), None, "v{version}");
            }
            let known = ids.known();
            assert_eq!(known.resolve(TopicRef::Name(b"x")), TopicRef::Name(b"x"));
        }
    }

    #[test]
    fn older_versions_and_unreadable_responses() {
        let ids = TopicIds::default();
        let topics = [(0, Some("empire-announce"), [1; 16])];
        assert_eq!(ids.learn(&response(12, &topics), 9), Ok(()));
        assert_eq!(name(&ids, [1; 16]), None);
        let whole = response(12, &[(0, Some("a"), [1; 16]), (0, Some("b"), [2; 16])]);
        let cut = &whole[..whole.len() - 20];
        assert!(ids.learn(cut, 12).is_err());
        assert_eq!(name(&ids, [1; 16]).as_deref(), Some(&b"a"[..]));
        assert_eq!(name(&ids, [2; 16]), None);
    }

    #[test]
    fn the_same_response_is_learned_again_only_once_the_map_changed() {
        let ids = TopicIds::default();
        let mut last = LastLearned::default();
        let plans = response(12, &[(0, Some("deathstar-plans"), [4; 16])]);
        let changes = || ids.changes.load(Ordering::Acquire);
        ids.learn_new(&plans, 12, &mut last).unwrap();
        assert_eq!(changes(), 1);
        ids.learn_new(&plans, 12, &mut last).unwrap();
        ids.learn(&plans, 12).unwrap();
        assert_eq!(changes(), 1, "nothing new: the map is not written");
        // Another connection's response names the id otherwise: the map changed, so the
        // response this one learned from teaches again.
        ids.learn(&response(12, &[(0, Some("other"), [4; 16])]), 12)
            .unwrap();
        assert_eq!(name(&ids, [4; 16]).as_deref(), Some(&b"other"[..]));
        ids.learn_new(&plans, 12, &mut last).unwrap();
        assert_eq!(
            name(&ids, [4; 16]).as_deref(),
            Some(&b"deathstar-plans"[..])
        );
        // Another response from this connection teaches.
        let announce = response(12, &[(0, Some("empire-announce"), [1; 16])]);
        ids.learn_new(&announce, 12, &mut last).unwrap();
        assert_eq!(
            name(&ids, [1; 16]).as_deref(),
            Some(&b"empire-announce"[..])
        );
        // One that cannot be read teaches what comes before the fault, each time.
        let both = response(
            12,
            &[
                (0, Some("deathstar-plans"), [4; 16]),
                (0, Some("b"), [2; 16]),
            ],
        );
        let cut = &both[..both.len() - 20];
        assert!(ids.learn_new(cut, 12, &mut last).is_err());
        ids.learn(&response(12, &[(0, Some("other"), [4; 16])]), 12)
            .unwrap();
        let _ = ids.learn_new(cut, 12, &mut last);
        assert_eq!(
            name(&ids, [4; 16]).as_deref(),
            Some(&b"deathstar-plans"[..])
        );
    }

    #[test]
    fn a_full_map_starts_anew() {
        let ids = TopicIds::default();
        for n in 0..MAX_TOPICS as u32 {
            let mut id = [0; 16];
            id[..4].copy_from_slice(&(n + 1).to_be_bytes());
            ids.names.write().unwrap().insert(id, b"t"[..].into());
        }
        ids.learn(&response(12, &[(0, Some("new"), [0xee; 16])]), 12)
            .unwrap();
        assert_eq!(ids.names.read().unwrap().len(), 1);
        assert_eq!(name(&ids, [0xee; 16]).as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn connections_to_one_upstream_share_a_map() {
        let clusters = Clusters::default();
        let a: SocketAddr = "127.0.0.1:9092".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:9092".parse().unwrap();
        let first = clusters.of(a);
        assert!(Arc::ptr_eq(&first, &clusters.of(a)));
        assert!(!Arc::ptr_eq(&first, &clusters.of(b)));
        for port in 0..MAX_UPSTREAMS as u16 {
            drop(clusters.of(SocketAddr::new(b.ip(), 10_000 + port)));
        }
        assert!(clusters.0.lock().unwrap().len() <= MAX_UPSTREAMS);
        assert!(Arc::ptr_eq(&first, &clusters.of(a)), "a map in use is kept");
    }
}
