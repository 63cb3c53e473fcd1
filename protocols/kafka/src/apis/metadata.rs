//! Metadata (key 3), v0 to v13: the topics a client asks about, whether it asks for all of
//! them, whether it asks the broker to create missing ones, the same request narrowed to some
//! of its topics or without leave to create them, and the response that denies it.
//!
//! From v1 a null topic array asks for every topic (v0: an empty one). From v10 a topic entry
//! carries an id and a nullable name; an entry with a zero id names its topic by its name, one
//! with a non-zero id and an empty or null name by that id, and one with both a non-zero id and
//! a name is refused: Kafka's broker reads its id, tansu its name.

use std::ops::Range;

use crate::topics::{Entries, KeptTopics, TopicEntry, TopicRef, Topics};
use crate::wire::{Reader, WireError, Writer};

/// A Metadata request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The topics asked about; `None` asks for all (v0: also an empty array).
    pub topics: Option<Topics<'a>>,
    /// Whether the broker may create the named topics that do not exist (v4+; always in
    /// earlier versions).
    pub allow_auto_topic_creation: bool,
    /// Whether the response is to carry the cluster's authorized operations (v8 to v10).
    pub include_cluster_authorized_operations: bool,
    /// Whether the response is to carry each topic's authorized operations (v8+).
    pub include_topic_authorized_operations: bool,
}

impl Request<'_> {
    /// Whether the request asks for every topic.
    pub fn all_topics(&self, version: i16) -> bool {
        match self.topics {
            None => true,
            Some(topics) => version == 0 && topics.is_empty(),
        }
    }

    /// Whether the request lets the broker create the topics it names that do not exist:
    /// it names some, and allows auto-creation (which v0 to v3 always do). A request for all
    /// topics creates none.
    pub fn creates_topics(&self) -> bool {
        self.allow_auto_topic_creation && self.topics.is_some_and(|topics| !topics.is_empty())
    }
}

/// Reads a Metadata request body, keeping the topics it names in `kept` as they are read.
pub fn parse<'a>(
    r: &mut Reader<'a>,
    version: i16,
    kept: &mut KeptTopics<'a>,
) -> Result<Request<'a>, WireError> {
    let topics = match version {
        0 => Some(Entries::read_keeping(
            r,
            version,
            "the topics",
            topic,
            kept,
        )?),
        _ => Entries::read_nullable_keeping(r, version, "the topics", topic, kept)?,
    };
    let mut request = Request {
        topics,
        allow_auto_topic_creation: true,
        include_cluster_authorized_operations: false,
        include_topic_authorized_operations: false,
    };
    if version >= 4 {
        request.allow_auto_topic_creation = r.bool("allow auto topic creation")?;
    }
    if (8..=10).contains(&version) {
        request.include_cluster_authorized_operations =
            r.bool("include cluster authorized operations")?;
    }
    if version >= 8 {
        request.include_topic_authorized_operations =
            r.bool("include topic authorized operations")?;
    }
    r.tagged_fields()?;
    Ok(request)
}

#[inline]
fn topic<'a>(r: &mut Reader<'a>, version: i16) -> Result<TopicEntry<'a>, WireError> {
    // Kafka's broker answers by id as soon as an entry has a non-zero one, ignoring names
    // (`KafkaApis.handleTopicMetadataRequest`); tansu answers an entry by its name whenever it
    // has one. An entry with a non-zero id and a name names two topics, one for each broker,
    // so it is refused; with an empty or null name (Kafka's Java client leaves the name empty
    // when it asks by id) it names the topic of its id.
    let topic = match version >= 10 {
        true => {
            let id = r.uuid("a topic id")?;
            match r.nullable_string("a topic name")? {
                Some(name) if id == [0; 16] => TopicRef::Name(name),
                Some(name) if !name.is_empty() => {
                    return Err(WireError::Ambiguous(
                        "a topic named by both an id and a name",
                    ))
                }
                _ => TopicRef::Id(id),
            }
        }
        false => TopicRef::Name(r.string("a topic name")?),
    };
    r.tagged_fields()?;
    Ok(TopicEntry {
        topic,
        partitions: Entries::empty(),
    })
}

/// Writes the body of `request` asking only for the topics `keep` retains (at least one, or a
/// v0 request would ask for all), with the same flags but for auto-creation, allowed only
/// when `create` (and the request allowed it), and no tagged fields. v0 to v3 have no flag:
/// they always allow it.
pub fn write_request(
    request: &Request<'_>,
    version: i16,
    keep: impl Fn(TopicRef<'_>) -> bool,
    create: bool,
    w: &mut Writer<'_>,
) {
    let topics = request.topics.unwrap_or_else(Entries::empty);
    let kept = || topics.iter().filter(|entry| keep(entry.topic));
    w.array_len(Some(kept().count()));
    for entry in kept() {
        let (name, id) = match entry.topic {
            TopicRef::Name(name) => (Some(name), [0; 16]),
            TopicRef::Id(id) => (None, id),
            TopicRef::Any => (None, [0; 16]),
        };
        if version >= 10 {
            w.uuid(&id);
            w.nullable_string(name);
        } else {
            w.string(name.unwrap_or_default());
        }
        w.tagged_fields();
    }
    if version >= 4 {
        w.bool(request.allow_auto_topic_creation && create);
    }
    if (8..=10).contains(&version) {
        w.bool(request.include_cluster_authorized_operations);
    }
    if version >= 8 {
        w.bool(request.include_topic_authorized_operations);
    }
    w.tagged_fields();
}

/// Writes the topic entry of a response of `version` that fails `topic` with `error`: named as
/// the request named it (a topic named by id has a null name, or an empty one before v12),
/// not internal, without partitions, with no authorized operations reported.
pub fn write_failed_topic(topic: TopicRef<'_>, version: i16, error: i16, w: &mut Writer<'_>) {
    w.i16(error);
    let (name, id) = match topic {
        TopicRef::Name(name) => (Some(name), [0; 16]),
        TopicRef::Id(id) => (None, id),
        TopicRef::Any => (None, [0; 16]),
    };
    match version >= 12 {
        true => w.nullable_string(name),
        false => w.string(name.unwrap_or_default()),
    }
    if version >= 10 {
        w.uuid(&id);
    }
    if version >= 1 {
        w.bool(false);
    }
    w.array_len(Some(0));
    if version >= 8 {
        w.i32(i32::MIN);
    }
    w.tagged_fields();
}

/// Writes the response body that fails every named topic with `error`, with no brokers, no
/// partitions and no cluster id. A request naming no topic gets no topics and, from v13, the
/// top-level `empty_error`.
pub fn write_denial(
    request: &Request<'_>,
    version: i16,
    error: i16,
    empty_error: i16,
    w: &mut Writer<'_>,
) {
    if version >= 3 {
        w.i32(0);
    }
    w.array_len(Some(0));
    if version >= 2 {
        w.nullable_string(None);
    }
    if version >= 1 {
        w.i32(-1);
    }
    let topics = request.topics.unwrap_or_else(Entries::empty);
    w.array_len(Some(topics.len()));
    for entry in topics.iter() {
        write_failed_topic(entry.topic, version, error, w);
    }
    if (8..=10).contains(&version) {
        w.i32(i32::MIN);
    }
    if version >= 13 {
        w.i16(if topics.is_empty() { empty_error } else { 0 });
    }
    w.tagged_fields();
}

/// Where the topics array of a Metadata response lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TopicsSpan {
    /// Offset of the array's length.
    count_at: usize,
    /// Offset of the first byte after its last entry.
    end: usize,
}

/// One topic entry of a Metadata response: where it lies and the topic it answers for, as
/// offsets into the response.
#[derive(Debug, Clone)]
struct BrokerEntry {
    start: usize,
    end: usize,
    name: Option<Range<usize>>,
    /// Zero before v10.
    id: [u8; 16],
    /// Placed in the rewritten response.
    chosen: bool,
}

impl BrokerEntry {
    /// Whether the entry, in `response`, answers for `topic` as a request named it.
    fn answers(&self, response: &[u8], topic: TopicRef<'_>) -> bool {
        match topic {
            TopicRef::Name(name) => self.name(response) == Some(name),
            TopicRef::Id(id) => id != [0; 16] && self.id == id,
            TopicRef::Any => false,
        }
    }

    /// The topic's name, in `response`.
    fn name<'r>(&self, response: &'r [u8]) -> Option<&'r [u8]> {
        self.name.clone().map(|at| &response[at])
    }

    /// The whole entry, in `response`.
    fn bytes<'r>(&self, response: &'r [u8]) -> &'r [u8] {
        &response[self.start..self.end]
    }
}

/// The buffers rewriting Metadata responses works in, kept between rewrites so that a warm
/// parser does not allocate for them.
#[derive(Debug, Default)]
pub struct RewriteBuffers {
    /// The broker's topic entries.
    entries: Vec<BrokerEntry>,
    /// For each topic placed, in order, what goes in its place.
    chosen: Vec<Choice>,
}

/// What a placed topic puts in the rewritten response.
#[derive(Debug, Clone, Copy)]
enum Choice {
    /// The broker's entry at this index of [`RewriteBuffers::entries`].
    Broker(usize),
    /// Its failed entry.
    Failed,
    /// Nothing: the broker did not answer for it.
    Nothing,
}

/// Finds the topics array of `response`, a Metadata response of `version` (a whole frame
/// without its 4-byte length, header included), and appends its entries to `entries`.
fn topics_span(
    response: &[u8],
    version: i16,
    entries: &mut Vec<BrokerEntry>,
) -> Result<TopicsSpan, WireError> {
    let flexible = version >= 9;
    let mut r = Reader::new(response, flexible);
    let at = |r: &Reader<'_>| response.len() - r.remaining();
    r.i32("the correlation id")?;
    r.tagged_fields()?;
    if version >= 3 {
        r.i32("the throttle time")?;
    }
    for _ in 0..r.array_len("the brokers")? {
        r.i32("a node id")?;
        r.string("a host")?;
        r.i32("a port")?;
        if version >= 1 {
            r.nullable_string("a rack")?;
        }
        r.tagged_fields()?;
    }
    if version >= 2 {
        r.nullable_string("the cluster id")?;
    }
    if version >= 1 {
        r.i32("the controller id")?;
    }
    let count_at = at(&r);
    for _ in 0..r.array_len("the topics")? {
        let start = at(&r);
        r.i16("a topic's error code")?;
        let name = r.nullable_string("a topic name")?.map(|name| {
            let end = at(&r);
            end - name.len()..end
        });
        let mut id = [0; 16];
        if version >= 10 {
            id = r.uuid("a topic id")?;
        }
        if version >= 1 {
            r.bool("is internal")?;
        }
        for _ in 0..r.array_len("the partitions")? {
            r.i16("a partition's error code")?;
            r.i32("a partition index")?;
            r.i32("a leader id")?;
            if version >= 7 {
                r.i32("a leader epoch")?;
            }
            r.skip_array(4, "the replicas")?;
            r.skip_array(4, "the in-sync replicas")?;
            if version >= 5 {
                r.skip_array(4, "the offline replicas")?;
            }
            r.tagged_fields()?;
        }
        if version >= 8 {
            r.i32("the topic's authorized operations")?;
        }
        r.tagged_fields()?;
        entries.push(BrokerEntry {
            start,
            end: at(&r),
            name,
            id,
            chosen: false,
        });
    }
    Ok(TopicsSpan {
        count_at,
        end: at(&r),
    })
}

/// A topic of a narrowed Metadata request, in the order the client's request named it.
#[derive(Debug, Clone, Copy)]
pub enum Placed<'a> {
    /// A topic the narrowed request kept, as it named it: the broker's entry for it goes here.
    Kept(TopicRef<'a>),
    /// A topic left out: this entry, as [`write_failed_topic`] writes it, goes here.
    Failed(&'a [u8]),
}

/// Appends to `out` the frame (4-byte length included) of `response`, a Metadata response of
/// `version` (a whole frame without its length, header included), with its topic entries in
/// the order `placed` gives: for each kept topic the broker's first entry answering for it
/// not yet placed, for each topic left out its failed entry. The broker's entries that answer
/// for no kept topic are left out: the client did not ask about them (a broker that answers a
/// request naming no topic with every topic would otherwise tell it of those it may not see).
/// Every other byte as the broker sent it. A response that does not follow its definition up
/// to the end of its topics is an error, and nothing is appended. Works in `buffers`.
pub fn add_topics<'p>(
    response: &[u8],
    version: i16,
    placed: impl Iterator<Item = Placed<'p>> + Clone,
    buffers: &mut RewriteBuffers,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let RewriteBuffers { entries, chosen } = buffers;
    entries.clear();
    chosen.clear();
    let span = topics_span(response, version, entries)?;
    for slot in placed.clone() {
        let choice = match slot {
            Placed::Failed(_) => Choice::Failed,
            Placed::Kept(topic) => entries
                .iter_mut()
                .enumerate()
                .find(|(_, entry)| !entry.chosen && entry.answers(response, topic))
                .map_or(Choice::Nothing, |(i, entry)| {
                    entry.chosen = true;
                    Choice::Broker(i)
                }),
        };
        chosen.push(choice);
    }
    let count = chosen
        .iter()
        .filter(|choice| !matches!(choice, Choice::Nothing))
        .count();
    write_with_topics(response, span, version, count, out, |out| {
        for (slot, choice) in placed.zip(chosen.iter()) {
            match (slot, *choice) {
                (Placed::Failed(entry), _) => out.extend_from_slice(entry),
                (Placed::Kept(_), Choice::Broker(i)) => {
                    out.extend_from_slice(entries[i].bytes(response));
                }
                (Placed::Kept(_), _) => {}
            }
        }
    });
    Ok(())
}

/// Appends to `out` the frame (4-byte length included) of `response`, a Metadata response of
/// `version` (a whole frame without its length, header included), keeping only the topic
/// entries whose name `keep` accepts, in the broker's order; entries without a name are left
/// out. Every other byte as the broker sent it. A response that does not follow its
/// definition up to the end of its topics is an error, and nothing is appended. Works in
/// `buffers`.
pub fn keep_topics(
    response: &[u8],
    version: i16,
    mut keep: impl FnMut(&[u8]) -> bool,
    buffers: &mut RewriteBuffers,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let entries = &mut buffers.entries;
    entries.clear();
    let span = topics_span(response, version, entries)?;
    let mut count = 0;
    for entry in entries.iter_mut() {
        entry.chosen = entry.name(response).is_some_and(&mut keep);
        count += usize::from(entry.chosen);
    }
    write_with_topics(response, span, version, count, out, |out| {
        for entry in entries.iter().filter(|entry| entry.chosen) {
            out.extend_from_slice(entry.bytes(response));
        }
    });
    Ok(())
}

/// Appends to `out` the frame (4-byte length included) of `response` with the `count` whole
/// entries `write_topics` appends in place of its topics array at `span`.
fn write_with_topics(
    response: &[u8],
    span: TopicsSpan,
    version: i16,
    count: usize,
    out: &mut Vec<u8>,
    write_topics: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&response[..span.count_at]);
    Writer::new(out, version >= 9).array_len(Some(count));
    write_topics(out);
    out.extend_from_slice(&response[span.end..]);
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
}
