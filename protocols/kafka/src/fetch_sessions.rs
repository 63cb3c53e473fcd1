//! The fetch sessions (KIP-227) one connection created, with the partitions each holds, so
//! that an incremental Fetch is judged on every topic the broker reads for it.
//!
//! A full Fetch (epoch 0) that policy let through asks the broker for a session holding its
//! partitions; the broker's response gives the session id. An incremental Fetch (any other
//! epoch but -1) names only the partitions it adds or changes and those it forgets, and the
//! broker reads every partition its session holds: it is judged on the topics of the session
//! and of the request together. A session this connection did not see created, or whose last
//! fetch is still unanswered (clients wait for each answer before the next fetch), holds
//! topics unknown here ([`SessionTopics::Unknown`]), which only a rule without `topic`
//! allows. Partitions join a session when its fetch is let through and leave it only when the
//! broker has answered the fetch that forgets them without error; any error, a denial, a full
//! fetch naming the session, or the final epoch (-1) forgets the session, which is always
//! safe: an unknown session is judged as holding unknown topics. A connection keeps
//! [`MAX_SESSIONS`] sessions of at most [`MAX_SESSION_PARTITIONS`] partitions; beyond that the
//! least recently used session, or the one that would grow past the limit, is forgotten.
//! This module is bookkeeping only: it reads no bytes and decides no verdict.

use crate::apis::fetch;
use crate::topics::TopicRef;
use crate::wire::Uuid;

/// Most fetch sessions kept per connection (a consumer needs one per broker connection).
pub const MAX_SESSIONS: usize = 4;

/// Most partitions kept per session.
pub const MAX_SESSION_PARTITIONS: usize = 10_000;

/// A topic of a session, as the requests named it.
#[derive(Debug)]
enum Held {
    Name(Box<[u8]>),
    Id(Uuid),
}

impl Held {
    fn of(topic: TopicRef<'_>) -> Option<Held> {
        match topic {
            TopicRef::Name(name) => Some(Held::Name(name.into())),
            TopicRef::Id(id) => Some(Held::Id(id)),
            TopicRef::Any => None,
        }
    }

    fn topic(&self) -> TopicRef<'_> {
        match self {
            Held::Name(name) => TopicRef::Name(name),
            Held::Id(id) => TopicRef::Id(*id),
        }
    }

    fn is(&self, topic: TopicRef<'_>) -> bool {
        self.topic() == topic
    }
}

/// A partition of a session.
#[derive(Debug, Clone, Copy)]
struct Partition {
    index: i32,
    /// Forgotten by a fetch whose answer has not come yet.
    leaving: bool,
}

#[derive(Debug)]
struct SessionTopic {
    topic: Held,
    partitions: Vec<Partition>,
}

#[derive(Debug)]
struct Session {
    /// `None` until the broker answers the fetch that creates it.
    id: Option<i32>,
    /// The ticket of the fetch whose answer is awaited.
    awaiting: Option<u64>,
    /// When it was last used, for eviction.
    used: u64,
    topics: Vec<SessionTopic>,
    partitions: usize,
}

impl Session {
    /// Adds the partitions of `fetch`'s topics; `false` past [`MAX_SESSION_PARTITIONS`] or for
    /// a topic that cannot be held.
    fn add(&mut self, fetch: &fetch::Request<'_>) -> bool {
        for entry in fetch.topics.iter() {
            let at = match self.topics.iter().position(|t| t.topic.is(entry.topic)) {
                Some(at) => at,
                None => {
                    let Some(topic) = Held::of(entry.topic) else {
                        return false;
                    };
                    self.topics.push(SessionTopic {
                        topic,
                        partitions: Vec::new(),
                    });
                    self.topics.len() - 1
                }
            };
            let partitions = &mut self.topics[at].partitions;
            for index in entry.partitions.iter() {
                match partitions.iter_mut().find(|p| p.index == index) {
                    Some(partition) => partition.leaving = false,
                    None => {
                        if self.partitions == MAX_SESSION_PARTITIONS {
                            return false;
                        }
                        partitions.push(Partition {
                            index,
                            leaving: false,
                        });
                        self.partitions += 1;
                    }
                }
            }
        }
        true
    }

    /// Marks the partitions `fetch` forgets as leaving.
    fn forget(&mut self, fetch: &fetch::Request<'_>) {
        for entry in fetch.forgotten.iter() {
            let Some(topic) = self.topics.iter_mut().find(|t| t.topic.is(entry.topic)) else {
                continue;
            };
            for index in entry.partitions.iter() {
                if let Some(partition) = topic.partitions.iter_mut().find(|p| p.index == index) {
                    partition.leaving = true;
                }
            }
        }
    }

    /// Drops the leaving partitions, and the topics left without any.
    fn settle(&mut self) {
        let mut dropped = 0;
        for topic in &mut self.topics {
            let before = topic.partitions.len();
            topic.partitions.retain(|p| !p.leaving);
            dropped += before - topic.partitions.len();
        }
        self.partitions -= dropped;
        self.topics.retain(|t| !t.partitions.is_empty());
    }
}

/// The fetch sessions of one connection.
#[derive(Debug, Default)]
pub struct FetchSessions {
    sessions: Vec<Session>,
    next_ticket: u64,
    clock: u64,
}

/// The topics an incremental Fetch reads through its session: those of a session of this
/// connection not awaiting an answer, or for any other session [`TopicRef::Any`] once.
#[derive(Debug, Clone)]
pub struct SessionTopics<'s> {
    held: std::slice::Iter<'s, SessionTopic>,
    unknown: bool,
}

impl<'s> Iterator for SessionTopics<'s> {
    type Item = TopicRef<'s>;

    fn next(&mut self) -> Option<TopicRef<'s>> {
        if let Some(held) = self.held.next() {
            return Some(held.topic.topic());
        }
        std::mem::take(&mut self.unknown).then_some(TopicRef::Any)
    }
}

impl FetchSessions {
    /// The topics the broker reads through the session of `fetch` besides those it names:
    /// none for a fetch that is not incremental.
    pub fn topics(&self, fetch: &fetch::Request<'_>) -> SessionTopics<'_> {
        let none = SessionTopics {
            held: [].iter(),
            unknown: false,
        };
        if !fetch.is_incremental() {
            return none;
        }
        match self.find(fetch.session_id) {
            Some(at) if self.sessions[at].awaiting.is_none() => SessionTopics {
                held: self.sessions[at].topics.iter(),
                ..none
            },
            _ => SessionTopics {
                unknown: true,
                ..none
            },
        }
    }

    /// `fetch` was let through: forgets the session a full fetch names, starts the session a
    /// full fetch with epoch 0 creates, and updates the session of an incremental one. The
    /// ticket, when the broker's answer must be read ([`FetchSessions::answered`]).
    pub fn forwarded(&mut self, fetch: &fetch::Request<'_>) -> Option<u64> {
        self.clock += 1;
        let known = self.find(fetch.session_id);
        if !fetch.is_incremental() {
            if let Some(at) = known {
                self.sessions.swap_remove(at);
            }
            if !fetch.creates_session() {
                return None;
            }
            let ticket = self.ticket();
            let mut session = Session {
                id: None,
                awaiting: Some(ticket),
                used: self.clock,
                topics: Vec::new(),
                partitions: 0,
            };
            if !session.add(fetch) {
                return None;
            }
            if self.sessions.len() == MAX_SESSIONS {
                self.evict();
            }
            self.sessions.push(session);
            return Some(ticket);
        }
        let at = known.filter(|&at| self.sessions[at].awaiting.is_none())?;
        let ticket = self.ticket();
        let session = &mut self.sessions[at];
        session.used = self.clock;
        session.awaiting = Some(ticket);
        if !session.add(fetch) {
            self.sessions.swap_remove(at);
            return None;
        }
        session.forget(fetch);
        Some(ticket)
    }

    /// An incremental fetch on session `id` was denied (and answered as for an unknown
    /// session): forgets the session.
    pub fn refused(&mut self, id: i32) {
        if let Some(at) = self.find(id) {
            self.sessions.swap_remove(at);
        }
    }

    /// The broker answered the fetch of `ticket` with a top-level `error` and `session_id`,
    /// or with a response that could not be read (`None`).
    pub fn answered(&mut self, ticket: u64, outcome: Option<(i16, i32)>) {
        let Some(at) = self
            .sessions
            .iter()
            .position(|s| s.awaiting == Some(ticket))
        else {
            return;
        };
        let session = &mut self.sessions[at];
        match (outcome, session.id) {
            (Some((0, id)), None) if id != 0 => {
                session.id = Some(id);
                session.awaiting = None;
                let created = self.sessions.swap_remove(at);
                self.sessions.retain(|s| s.id != Some(id));
                self.sessions.push(created);
            }
            (Some((0, id)), Some(own)) if id == own => {
                session.awaiting = None;
                session.settle();
            }
            _ => {
                self.sessions.swap_remove(at);
            }
        }
    }

    /// How many sessions are kept (created, or awaiting the answer that creates them).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn find(&self, id: i32) -> Option<usize> {
        match id {
            0 => None,
            id => self.sessions.iter().position(|s| s.id == Some(id)),
        }
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn evict(&mut self) {
        if let Some(at) = (0..self.sessions.len()).min_by_key(|&at| self.sessions[at].used) {
            self.sessions.swap_remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;

    /// A Fetch v12 request (a whole frame without its length) in `session_id` at `epoch`.
    fn fetch(
        session_id: i32,
        epoch: i32,
        topics: &[(&str, &[i32])],
        forgotten: &[(&str, &[i32])],
    ) -> Vec<u8> {
        let mut m = b"\x00\x01\x00\x0c\x00\x00\x00\x01\x00\x00\x00".to_vec();
        m.extend_from_slice(&[0xff; 4]);
        m.extend_from_slice(&[0; 13]);
        m.extend_from_slice(&session_id.to_be_bytes());
        m.extend_from_slice(&epoch.to_be_bytes());
        for (list, full) in [(topics, true), (forgotten, false)] {
            uvarint(&mut m, list.len() + 1);
            for (name, partitions) in list {
                m.push(name.len() as u8 + 1);
                m.extend_from_slice(name.as_bytes());
                uvarint(&mut m, partitions.len() + 1);
                for p in *partitions {
                    m.extend_from_slice(&p.to_be_bytes());
                    if full {
                        // Leader epoch, offset, last fetched epoch, log start, maximum bytes.
                        m.extend_from_slice(&[0; 28]);
                        m.push(0);
                    }
                }
                m.push(0);
            }
        }
        m.extend_from_slice(b"\x01\x00");
        m
    }

    fn uvarint(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push(n as u8 | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn with<T>(message: &[u8], f: impl FnOnce(&fetch::Request<'_>) -> T) -> T {
        match Request::parse(message).unwrap().body {
            crate::Body::Fetch(fetch) => f(&fetch),
            body => panic!("{body:?}"),
        }
    }

    fn held(sessions: &FetchSessions, session_id: i32) -> Vec<String> {
        with(&fetch(session_id, 1, &[], &[]), |f| {
            sessions
                .topics(f)
                .map(|t| match t {
                    TopicRef::Name(name) => String::from_utf8_lossy(name).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect()
        })
    }

    fn create(sessions: &mut FetchSessions, id: i32, topics: &[(&str, &[i32])]) {
        let ticket = with(&fetch(0, 0, topics, &[]), |f| sessions.forwarded(f)).unwrap();
        sessions.answered(ticket, Some((0, id)));
    }

    #[test]
    fn partitions_leave_when_the_broker_confirms_and_topics_with_none_left() {
        let mut s = FetchSessions::default();
        create(&mut s, 7, &[("a", &[0, 1]), ("b", &[0])]);
        assert_eq!(held(&s, 7), ["a", "b"]);
        let forget = fetch(7, 1, &[("c", &[3])], &[("a", &[0]), ("b", &[0])]);
        let ticket = with(&forget, |f| s.forwarded(f)).unwrap();
        assert_eq!(held(&s, 7), ["Any"], "awaiting its answer");
        s.answered(ticket, Some((0, 7)));
        assert_eq!(held(&s, 7), ["a", "c"]);
        let failing = fetch(7, 2, &[], &[("a", &[1])]);
        let ticket = with(&failing, |f| s.forwarded(f)).unwrap();
        s.answered(ticket, Some((71, 0)));
        assert_eq!(held(&s, 7), ["Any"], "forgotten with its error");
        assert!(s.is_empty());
    }

    #[test]
    fn a_creation_that_the_broker_declines_or_that_is_not_read_leaves_nothing() {
        let mut s = FetchSessions::default();
        let ticket = with(&fetch(0, 0, &[("a", &[0])], &[]), |f| s.forwarded(f)).unwrap();
        s.answered(ticket, Some((0, 0)));
        assert!(s.is_empty());
        let ticket = with(&fetch(0, 0, &[("a", &[0])], &[]), |f| s.forwarded(f)).unwrap();
        s.answered(ticket, None);
        assert!(s.is_empty());
        assert_eq!(
            with(&fetch(0, -1, &[("a", &[0])], &[]), |f| s.forwarded(f)),
            None
        );
        assert!(s.is_empty(), "the final epoch creates no session");
    }

    #[test]
    fn sessions_are_bounded_in_number_and_size() {
        let mut s = FetchSessions::default();
        for id in 1..=MAX_SESSIONS as i32 + 1 {
            create(&mut s, id, &[("a", &[0])]);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(held(&s, 1), ["Any"], "the least recently used is forgotten");
        assert_eq!(held(&s, 2), ["a"]);
        let many: Vec<i32> = (0..MAX_SESSION_PARTITIONS as i32 + 1).collect();
        let big = fetch(0, 0, &[("b", &many)], &[]);
        assert_eq!(with(&big, |f| s.forwarded(f)), None, "too large to keep");
        assert_eq!(held(&s, 2), ["a"], "none forgotten for a session not kept");
    }

    #[test]
    fn the_same_session_id_given_again_replaces_the_old_session() {
        let mut s = FetchSessions::default();
        create(&mut s, 7, &[("a", &[0])]);
        create(&mut s, 8, &[("b", &[0])]);
        let ticket = with(&fetch(0, 0, &[("c", &[0])], &[]), |f| s.forwarded(f)).unwrap();
        s.answered(ticket, Some((0, 7)));
        assert_eq!(held(&s, 7), ["c"]);
        assert_eq!(held(&s, 8), ["b"]);
        assert_eq!(s.len(), 2);
    }
}
