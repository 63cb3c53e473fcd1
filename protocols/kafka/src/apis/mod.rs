//! Requests as policy reads them: the header, and for the APIs that name topics (and
//! FindCoordinator, whose denial answers its keys) the body, read in place; and the response
//! that denies a request.
//!
//! One module per API keeps its request reading, its denial and their field layouts together,
//! each following Kafka 4.3's `<Name>Request.json` and `<Name>Response.json`. Bodies of APIs
//! that name no topics are not read (policy judges them by key, version and client id), and
//! neither are record batches. This module dispatches by API key; it decides nothing.

pub mod acls;
pub mod add_partitions_to_txn;
pub mod api_versions;
pub mod configs;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod fetch;
pub mod find_coordinator;
pub mod group;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod telemetry;
pub mod txn_offset_commit;

use crate::api::*;
use crate::error::Error;
use crate::header::{write_response, RequestHeader};
use crate::parser::reads_body;
use crate::topics::{
    Entries, KeptTopics, NamedTopics, RequestTopics, TopicEntry, TopicRef, Topics,
    CLUSTER_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED,
};
use crate::wire::{Reader, WireError, Writer};

/// The body of a request, for the APIs whose bodies are read.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Produce (key 0).
    Produce(produce::Request<'a>),
    /// Fetch (key 1).
    Fetch(fetch::Request<'a>),
    /// ListOffsets (key 2).
    ListOffsets(list_offsets::Request<'a>),
    /// Metadata (key 3).
    Metadata(metadata::Request<'a>),
    /// OffsetCommit (key 8).
    OffsetCommit(offset_commit::Request<'a>),
    /// OffsetFetch (key 9).
    OffsetFetch(offset_fetch::Request<'a>),
    /// CreateTopics (key 19).
    CreateTopics(create_topics::Request<'a>),
    /// DeleteTopics (key 20).
    DeleteTopics(delete_topics::Request<'a>),
    /// DeleteRecords (key 21).
    DeleteRecords(delete_records::Request<'a>),
    /// OffsetForLeaderEpoch (key 23).
    OffsetForLeaderEpoch(offset_for_leader_epoch::Request<'a>),
    /// AddPartitionsToTxn (key 24).
    AddPartitionsToTxn(add_partitions_to_txn::Request<'a>),
    /// TxnOffsetCommit (key 28).
    TxnOffsetCommit(txn_offset_commit::Request<'a>),
    /// FindCoordinator (key 10): read for its keys, which its denial answers.
    FindCoordinator(find_coordinator::Request<'a>),
    /// DescribeConfigs (key 32), AlterConfigs (key 33), IncrementalAlterConfigs (key 44).
    Configs(configs::Request<'a>),
    /// DescribeAcls (key 29), CreateAcls (key 30), DeleteAcls (key 31).
    Acls(acls::Request<'a>),
    /// An API whose body names no topic: not read.
    Unread,
}

/// A request: its header and, where it names topics, its body.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The header.
    pub header: RequestHeader<'a>,
    /// The body.
    pub body: Body<'a>,
    /// The topics the body names, kept as it was read.
    kept: KeptTopics<'a>,
}

/// Writes the denial body of an API whose request is not read, at a version, with an error
/// code.
pub type WriteDenial = fn(i16, i16, &mut Writer<'_>);

/// What [`Request::write_denial`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// A response was appended.
    Written,
    /// The request expects no response (Produce with `acks` 0).
    NoResponse,
    /// This crate composes no response for this API and version.
    Unsupported,
}

impl<'a> Request<'a> {
    /// Reads a request: `message` is a whole frame without its 4-byte length. The bodies of
    /// the APIs listed in [`Body`] must hold every field of their version's definition; bytes
    /// after the last one are ignored, as the broker ignores them.
    pub fn parse(message: &'a [u8]) -> Result<Request<'a>, Error> {
        let mut slot = None;
        Self::parse_in(message, &mut slot).copied()
    }

    /// [`Request::parse`], building the request in `slot`, where the caller keeps it: a
    /// request is a few hundred bytes, not worth moving.
    pub fn parse_in<'s>(
        message: &'a [u8],
        slot: &'s mut Option<Request<'a>>,
    ) -> Result<&'s Request<'a>, Error> {
        let (header, mut r) = RequestHeader::parse(message)?;
        let (key, version) = (header.api.key, header.api_version);
        if !reads_body(key) {
            return Ok(slot.insert(Request::unread(header)));
        }
        if !header.api.accepts(version) {
            return Err(Error::UnsupportedVersion {
                api: header.api.name,
                version,
            });
        }
        // Bytes after the last field are left unread, as Kafka's broker leaves them (it
        // parses a request's fields and never checks that the frame ends there), so the proxy
        // and the broker read the same fields; librdkafka's Metadata request for all topics
        // ends in three such bytes. Each body is read by a direct call, so that its reading is
        // inlined here and it is written in place.
        let request = slot.insert(Request::unread(header));
        let (r, v, kept) = (&mut r, version, &mut request.kept);
        request.body = match key {
            // Topics kept as their entries are read.
            PRODUCE => Body::Produce(produce::parse(r, v, kept)?),
            FETCH => Body::Fetch(fetch::parse(r, v, kept)?),
            LIST_OFFSETS => Body::ListOffsets(list_offsets::parse(r, v, kept)?),
            METADATA => Body::Metadata(metadata::parse(r, v, kept)?),
            OFFSET_COMMIT => Body::OffsetCommit(offset_commit::parse(r, v, kept)?),
            CREATE_TOPICS => Body::CreateTopics(create_topics::parse(r, v, kept)?),
            DELETE_TOPICS => Body::DeleteTopics(delete_topics::parse(r, v, kept)?),
            DELETE_RECORDS => Body::DeleteRecords(delete_records::parse(r, v, kept)?),
            OFFSET_FOR_LEADER_EPOCH => {
                Body::OffsetForLeaderEpoch(offset_for_leader_epoch::parse(r, v, kept)?)
            }
            TXN_OFFSET_COMMIT => Body::TxnOffsetCommit(txn_offset_commit::parse(r, v, kept)?),
            // Topics in nested arrays or resources, kept as their entries are read too.
            OFFSET_FETCH => Body::OffsetFetch(offset_fetch::parse(r, v, kept)?),
            ADD_PARTITIONS_TO_TXN => {
                Body::AddPartitionsToTxn(add_partitions_to_txn::parse(r, v, kept)?)
            }
            DESCRIBE_CONFIGS | ALTER_CONFIGS | INCREMENTAL_ALTER_CONFIGS => {
                Body::Configs(configs::parse(r, key, v, kept)?)
            }
            DESCRIBE_ACLS | CREATE_ACLS | DELETE_ACLS => Body::Acls(acls::parse(r, key, v, kept)?),
            // Names no topic.
            FIND_COORDINATOR => Body::FindCoordinator(find_coordinator::parse(r, v)?),
            _ => Body::Unread,
        };
        Ok(request)
    }

    /// A request whose body is not read: it names no topic.
    pub fn unread(header: RequestHeader<'a>) -> Request<'a> {
        Request {
            header,
            body: Body::Unread,
            kept: KeptTopics::none(),
        }
    }

    /// The topics the request names, as [`Request::topics`], when they were all kept as it
    /// was parsed; `None` when there are more than [`crate::topics::KEPT_TOPICS`].
    pub fn kept_topics(&self) -> Option<&[TopicRef<'a>]> {
        self.kept.all()
    }

    /// The topics the request names, in order, by name or id (a topic named twice comes
    /// twice). Empty for a request that names none, among them a Metadata or OffsetFetch
    /// request for all topics.
    pub fn topics(&self) -> RequestTopics<'_, 'a> {
        match self.kept.all() {
            Some(kept) => RequestTopics::Kept(kept.iter()),
            None => RequestTopics::Read(Self::read_topics(&self.body)),
        }
    }

    /// The topics `body` names, read from its bytes.
    fn read_topics(body: &Body<'a>) -> NamedTopics<'a> {
        match body {
            Body::Produce(r) => NamedTopics::of(Some(&r.topics)),
            Body::Fetch(r) => NamedTopics::of(Some(&r.topics)),
            Body::ListOffsets(r) => NamedTopics::of(Some(&r.topics)),
            Body::Metadata(r) => NamedTopics::of(r.topics.as_ref()),
            Body::OffsetCommit(r) => NamedTopics::of(Some(&r.topics)),
            Body::OffsetFetch(r) => r.topics(),
            Body::CreateTopics(r) => NamedTopics::of(Some(&r.topics)),
            Body::DeleteTopics(r) => NamedTopics::of(Some(&r.topics)),
            Body::DeleteRecords(r) => NamedTopics::of(Some(&r.topics)),
            Body::OffsetForLeaderEpoch(r) => NamedTopics::of(Some(&r.topics)),
            Body::AddPartitionsToTxn(r) => r.topics(),
            Body::TxnOffsetCommit(r) => NamedTopics::of(Some(&r.topics)),
            Body::FindCoordinator(_) => NamedTopics::of(None),
            Body::Configs(r) => NamedTopics::of_resources(&r.resources),
            Body::Acls(acls::Request::Describe(filter)) => NamedTopics::one(filter.topic),
            Body::Acls(acls::Request::Many(entries)) => NamedTopics::of_resources(entries),
            Body::Unread => NamedTopics::of(None),
        }
    }

    /// Appends to `out` the response that denies this request: the same API, version and
    /// correlation id, with TOPIC_AUTHORIZATION_FAILED (29) on every topic or partition it
    /// names; GROUP_AUTHORIZATION_FAILED (30) for the group APIs (JoinGroup, Heartbeat,
    /// LeaveGroup, SyncGroup, ListGroups), for an OffsetFetch naming no topic and for
    /// FindCoordinator (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, 53, for a transactional id);
    /// CLUSTER_AUTHORIZATION_FAILED (31) for ApiVersions, InitProducerId (also for a
    /// transactional id: the request is not read), the telemetry APIs, a Metadata request
    /// naming no topic (v13+, the only versions with a top-level error), the ACL APIs and the
    /// config resources that are no topic; an incremental Fetch is answered
    /// FETCH_SESSION_ID_NOT_FOUND (70), which makes the client start over with a full one.
    pub fn write_denial(&self, out: &mut Vec<u8>) -> Denial {
        let version = self.header.api_version;
        let error = TOPIC_AUTHORIZATION_FAILED;
        let key = self.header.api.key;
        let unread = group::denial(key, version)
            .map(|write| (write, GROUP_AUTHORIZATION_FAILED))
            .or_else(|| {
                api_versions::denial(key, version)
                    .or_else(|| init_producer_id::denial(key, version))
                    .or_else(|| telemetry::denial(key, version))
                    .map(|write| (write, CLUSTER_AUTHORIZATION_FAILED))
            });
        match (&self.body, unread) {
            (Body::Produce(r), _) if r.acks == 0 => return Denial::NoResponse,
            (
                Body::Produce(_)
                | Body::Fetch(_)
                | Body::ListOffsets(_)
                | Body::Metadata(_)
                | Body::OffsetCommit(_)
                | Body::OffsetFetch(_)
                | Body::CreateTopics(_)
                | Body::DeleteTopics(_)
                | Body::FindCoordinator(_)
                | Body::Configs(_)
                | Body::Acls(_),
                _,
            )
            | (Body::Unread, Some(_)) => {}
            _ => return Denial::Unsupported,
        }
        write_response(out, &self.header, |w| match &self.body {
            Body::Produce(r) => produce::write_denial(r, version, error, w),
            Body::Fetch(r) => fetch::write_denial(r, version, error, w),
            Body::ListOffsets(r) => list_offsets::write_denial(r, version, error, w),
            Body::Metadata(r) => {
                metadata::write_denial(r, version, error, CLUSTER_AUTHORIZATION_FAILED, w)
            }
            Body::OffsetCommit(r) => offset_commit::write_denial(r, version, error, w),
            Body::OffsetFetch(r) => {
                offset_fetch::write_denial(r, version, error, GROUP_AUTHORIZATION_FAILED, w)
            }
            Body::CreateTopics(r) => create_topics::write_denial(r, version, error, w),
            Body::DeleteTopics(r) => delete_topics::write_denial(r, version, error, w),
            Body::FindCoordinator(r) => find_coordinator::write_denial(r, version, w),
            Body::Configs(r) => configs::write_denial(r, key, w),
            Body::Acls(r) => acls::write_denial(r, key, w),
            // Checked above: only the unread APIs with a denial remain.
            _ => {
                if let Some((write, code)) = unread {
                    write(version, code, w);
                }
            }
        });
        Denial::Written
    }
}

/// Whether requests of the API `key` carry topics: the keys Cilium counted (`isTopicAPIKey`
/// in `proxylib/kafka/kafkalib/policy.go`); the config and ACL APIs, whose topic resources
/// Cilium did not count (so that a rule for one topic let a client alter the configs or ACLs
/// of any other); and those of the later keys Cilium never knew
/// whose requests name topics (ElectLeaders, IncrementalAlterConfigs, the partition
/// reassignments, OffsetDelete, the KRaft quorum and replica APIs, Envelope (which carries
/// another request), DescribeProducers,
/// ConsumerGroupHeartbeat, DescribeTopicPartitions, the share and streams group APIs that name
/// topics). A rule's `topic` constrains only these. The keys whose bodies this crate does not
/// read then name no topic, so only rules without a topic allow them, as in Cilium.
pub fn names_topics(key: i16) -> bool {
    matches!(
        key,
        PRODUCE
            | FETCH
            | LIST_OFFSETS
            | METADATA
            | 4
            | 5
            | 6
            | OFFSET_COMMIT
            | OFFSET_FETCH
            | CREATE_TOPICS
            | DELETE_TOPICS
            | DELETE_RECORDS
            | OFFSET_FOR_LEADER_EPOCH
            | ADD_PARTITIONS_TO_TXN
            | 27
            | TXN_OFFSET_COMMIT
            | DESCRIBE_ACLS
            | CREATE_ACLS
            | DELETE_ACLS
            | DESCRIBE_CONFIGS
            | ALTER_CONFIGS
            | 34
            | 35
            | 37
            | 43..=47
            | 52..=56
            | 58
            | 59
            | 61
            | 68
            | 73
            | 75
            | 76
            | 78
            | 79
            | 83..=88
            | 90..=92
    )
}

/// Reads a topic name, or a topic id when `by_id`.
#[inline(always)]
fn topic_ref<'a>(r: &mut Reader<'a>, by_id: bool) -> Result<TopicRef<'a>, WireError> {
    match by_id {
        true => r.uuid("a topic id").map(TopicRef::Id),
        false => r.string("a topic name").map(TopicRef::Name),
    }
}

/// A topic entry as the requests that name partitions carry it: the topic (by name, or by id
/// from [`PartitionedTopic::IDS_FROM`]), its partitions (each an `int32` index and the API's
/// own fields), the entry's tagged fields. Each API names its shape with a unit type.
trait PartitionedTopic {
    /// The first version naming topics by id; by default none does.
    const IDS_FROM: i16 = i16::MAX;
    /// The partitions array, as errors name it.
    const PARTITIONS: &'static str = "the partitions";
    /// Reads one partition entry, its tagged fields included, and returns its index.
    fn partition(r: &mut Reader<'_>, version: i16) -> Result<i32, WireError>;
}

/// Reads one topic entry of the shape `S`.
#[inline(always)]
fn partitioned_topic<'a, S: PartitionedTopic>(
    r: &mut Reader<'a>,
    version: i16,
) -> Result<TopicEntry<'a>, WireError> {
    let topic = topic_ref(r, version >= S::IDS_FROM)?;
    let partitions = Entries::read(r, version, S::PARTITIONS, S::partition)?;
    r.tagged_fields()?;
    Ok(TopicEntry { topic, partitions })
}

/// Writes the topics array of a denial: each topic of `topics` as the request named it (by id
/// when `by_id`), each of its partitions as `partition` writes it (from its index, tagged
/// fields included), then the entry's tagged fields.
fn write_partitioned_denial(
    w: &mut Writer<'_>,
    topics: &Topics<'_>,
    by_id: bool,
    mut partition: impl FnMut(&mut Writer<'_>, i32),
) {
    w.array_len(Some(topics.len()));
    for entry in topics.iter() {
        write_topic_ref(w, entry.topic, by_id);
        w.array_len(Some(entry.partitions.len()));
        for index in entry.partitions.iter() {
            partition(w, index);
        }
        w.tagged_fields();
    }
}

/// Writes a topic as [`topic_ref`] reads it.
fn write_topic_ref(w: &mut Writer<'_>, topic: TopicRef<'_>, by_id: bool) {
    match (topic, by_id) {
        (TopicRef::Id(id), true) => w.uuid(&id),
        (TopicRef::Name(_), true) => w.uuid(&[0; 16]),
        (TopicRef::Name(name), false) => w.string(name),
        (TopicRef::Id(_) | TopicRef::Any, false) => w.string(b""),
        (TopicRef::Any, true) => w.uuid(&[0; 16]),
    }
}

#[cfg(test)]
mod tests;
