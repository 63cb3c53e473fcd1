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
            if self.sessions.len() == MAX_SESSIONS {
                self.evict();
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
