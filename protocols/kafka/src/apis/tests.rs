//! The message modules judged by an oracle of their own: the field layouts of Kafka 4.3's
//! message definitions transcribed as data, an encoder that builds requests from them and a
//! reader that decodes responses by them. Neither uses the crate's wire module.

use proptest::prelude::*;

use super::*;
use crate::topics::KEPT_TOPICS;

/// A field's type, as the definitions write it.
#[derive(Clone, Copy)]
enum Ty {
    I8,
    I16,
    I32,
    I64,
    Bool,
    Uuid,
    Str,
    /// `bytes` or `records`.
    Bytes,
    /// `[]int32`.
    I32s,
    /// `[]string`.
    Strs,
    /// An array of structures.
    Array(&'static [Field]),
}

/// What a field means to the oracle.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Plain,
    /// A topic name (of a topic the request names).
    Topic,
    /// A topic id.
    TopicId,
    /// A topic id that, when not zero, names the topic (Metadata: Kafka's broker then answers
    /// by ids and ignores names); with a non-empty name too, the request is refused (tansu
    /// answers by the name).
    RulingTopicId,
    /// A topic id that names the topic when the name is null; with a name and a non-zero id
    /// the request is refused (DeleteTopics: Kafka's broker refuses it, tansu reads the id).
    ExclusiveTopicId,
    /// A partition index (`[]int32` or `int32`).
    Partition,
    /// A topic's or partition's error code.
    Fail,
    /// A group's or the response's error code.
    TopError,
    /// Produce's acks.
    Acks,
    /// A topic array whose null asks for all topics: the request then names all of them.
    AllWhenNull,
    /// Fetch's session epoch: neither 0 nor -1 makes the fetch incremental.
    Epoch,
    /// The resource type of a config resource (2: topic; 4, 8, 16, 32: no topic).
    ConfigType,
    /// The resource type of an ACL or ACL filter (2: topic; 3 to 7: no topic).
    AclType,
    /// The pattern type of an ACL or ACL filter (3: literal).
    AclPattern,
    /// A config or ACL resource's name, a topic's by its type.
    ResourceName,
}

#[derive(Clone, Copy)]
struct Field {
    ty: Ty,
    low: i16,
    high: i16,
    /// First version in which the field may be null.
    nullable: i16,
    role: Role,
}

const ALL: i16 = i16::MAX;
const NEVER: i16 = i16::MAX;

const fn f(ty: Ty, low: i16, high: i16) -> Field {
    Field {
        ty,
        low,
        high,
        nullable: NEVER,
        role: Role::Plain,
    }
}

const fn n(ty: Ty, low: i16, high: i16, nullable: i16) -> Field {
    Field {
        ty,
        low,
        high,
        nullable,
        role: Role::Plain,
    }
}

const fn r(field: Field, role: Role) -> Field {
    Field { role, ..field }
}

use Role::*;
use Ty::*;

// ProduceRequest.json
const PRODUCE_PARTITION: &[Field] = &[r(f(I32, 0, ALL), Partition), n(Bytes, 0, ALL, 0)];
const PRODUCE_TOPIC: &[Field] = &[
    r(f(Str, 0, 12), Topic),
    r(f(Uuid, 13, ALL), TopicId),
    f(Array(PRODUCE_PARTITION), 0, ALL),
];
const PRODUCE_REQUEST: &[Field] = &[
    n(Str, 3, ALL, 3),
    r(f(I16, 0, ALL), Acks),
    f(I32, 0, ALL),
    f(Array(PRODUCE_TOPIC), 0, ALL),
];
// ProduceResponse.json
const PRODUCE_RECORD_ERROR: &[Field] = &[f(I32, 8, ALL), n(Str, 8, ALL, 8)];
const PRODUCE_PARTITION_RESPONSE: &[Field] = &[
    r(f(I32, 0, ALL), Partition),
    r(f(I16, 0, ALL), Fail),
    f(I64, 0, ALL),
    f(I64, 2, ALL),
    f(I64, 5, ALL),
    f(Array(PRODUCE_RECORD_ERROR), 8, ALL),
    n(Str, 8, ALL, 8),
];
const PRODUCE_TOPIC_RESPONSE: &[Field] = &[
    r(f(Str, 0, 12), Topic),
    r(f(Uuid, 13, ALL), TopicId),
    f(Array(PRODUCE_PARTITION_RESPONSE), 0, ALL),
];
const PRODUCE_RESPONSE: &[Field] = &[f(Array(PRODUCE_TOPIC_RESPONSE), 0, ALL), f(I32, 1, ALL)];

// FetchRequest.json
const FETCH_PARTITION: &[Field] = &[
    r(f(I32, 0, ALL), Partition),
    f(I32, 9, ALL),
    f(I64, 0, ALL),
    f(I32, 12, ALL),
    f(I64, 5, ALL),
    f(I32, 0, ALL),
];
const FETCH_TOPIC: &[Field] = &[
    r(f(Str, 0, 12), Topic),
    r(f(Uuid, 13, ALL), TopicId),
    f(Array(FETCH_PARTITION), 0, ALL),
];
const FETCH_FORGOTTEN: &[Field] = &[f(Str, 7, 12), f(Uuid, 13, ALL), f(I32s, 7, ALL)];
const FETCH_REQUEST: &[Field] = &[
    f(I32, 0, 14),
    f(I32, 0, ALL),
    f(I32, 0, ALL),
    f(I32, 3, ALL),
    f(I8, 4, ALL),
    f(I32, 7, ALL),
    r(f(I32, 7, ALL), Epoch),
    f(Array(FETCH_TOPIC), 0, ALL),
    f(Array(FETCH_FORGOTTEN), 7, ALL),
    f(Str, 11, ALL),
];
// FetchResponse.json
const FETCH_ABORTED: &[Field] = &[f(I64, 4, ALL), f(I64, 4, ALL)];
const FETCH_PARTITION_RESPONSE: &[Field] = &[
    r(f(I32, 0, ALL), Partition),
    r(f(I16, 0, ALL), Fail),
    f(I64, 0, ALL),
    f(I64, 4, ALL),
    f(I64, 5, ALL),
    n(Array(FETCH_ABORTED), 4, ALL, 4),
    f(I32, 11, ALL),
    n(Bytes, 0, ALL, 0),
];
const FETCH_TOPIC_RESPONSE: &[Field] = &[
    r(f(Str, 0, 12), Topic),
    r(f(Uuid, 13, ALL), TopicId),
    f(Array(FETCH_PARTITION_RESPONSE), 0, ALL),
];
const FETCH_RESPONSE: &[Field] = &[
    f(I32, 1, ALL),
    r(f(I16, 7, ALL), TopError),
    f(I32, 7, ALL),
    f(Array(FETCH_TOPIC_RESPONSE), 0, ALL),
];

// ListOffsetsRequest.json
const LIST_OFFSETS_PARTITION: &[Field] =
    &[r(f(I32, 0, ALL), Partition), f(I32, 4, ALL), f(I64, 0, ALL)];
const LIST_OFFSETS_TOPIC: &[Field] = &[
    r(f(Str, 0, ALL), Topic),
    f(Array(LIST_OFFSETS_PARTITION), 0, ALL),
];
const LIST_OFFSETS_REQUEST: &[Field] = &[
    f(I32, 0, ALL),
    f(I8, 2, ALL),
    f(Array(LIST_OFFSETS_TOPIC), 0, ALL),
    f(I32, 10, ALL),
];
// ListOffsetsResponse.json
const LIST_OFFSETS_PARTITION_RESPONSE: &[Field] = &[
    r(f(I32, 0, ALL), Partition),
    r(f(I16, 0, ALL), Fail),
    f(I64, 1, ALL),
    f(I64, 1, ALL),
    f(I32, 4, ALL),
];
const LIST_OFFSETS_TOPIC_RESPONSE: &[Field] = &[
    r(f(Str, 0, ALL), Topic),
    f(Array(LIST_OFFSETS_PARTITION_RESPONSE), 0, ALL),
];
const LIST_OFFSETS_RESPONSE: &[Field] = &[
    f(I32, 2, ALL),
    f(Array(LIST_OFFSETS_TOPIC_RESPONSE), 0, ALL),
];

// MetadataRequest.json
const METADATA_TOPIC: &[Field] = &[
    r(f(Uuid, 10, ALL), RulingTopicId),
    r(n(Str, 0, ALL, 10), Topic),
];
const METADATA_REQUEST: &[Field] = &[
    n(Array(METADATA_TOPIC), 0, ALL, 1),
    f(Bool, 4, ALL),
    f(Bool, 8, 10),
    f(Bool, 8, ALL),
];
// MetadataResponse.json
const METADATA_BROKER: &[Field] = &[
    f(I32, 0, ALL),
    f(Str, 0, ALL),
    f(I32, 0, ALL),
    n(Str, 1, ALL, 1),
];
const METADATA_PARTITION: &[Field] = &[
    f(I16, 0, ALL),
    f(I32, 0, ALL),
    f(I32, 0, ALL),
    f(I32, 7, ALL),
    f(I32s, 0, ALL),
    f(I32s, 0, ALL),
    f(I32s, 5, ALL),
];
const METADATA_TOPIC_RESPONSE: &[Field] = &[
    r(f(I16, 0, ALL), Fail),
    r(n(Str, 0, ALL, 12), Topic),
    r(f(Uuid, 10, ALL), TopicId),
    f(Bool, 1, ALL),
    f(Array(METADATA_PARTITION), 0, ALL),
    f(I32, 8, ALL),
];
const METADATA_RESPONSE: &[Field] = &[
    f(I32, 3, ALL),
    f(Array(METADATA_BROKER), 0, ALL),
    n(Str, 2, ALL, 2),
    f(I32, 1, ALL),
    f(Array(METADATA_TOPIC_RESPONSE), 0, ALL),
    f(I32, 8, 10),
    r(f(I16, 13, ALL), TopError),
];

// OffsetCommitRequest.json
const OFFSET_COMMIT_PARTITION: &[Field] = &[
    r(f(I32, 0, ALL), Partition),
    f(I64, 0, ALL),
    f(I32, 6, ALL),
    f(I64, 1, 1),
    n(Str, 0, ALL, 0),
];
const OFFSET_COMMIT_TOPIC: &[Field] = &[
    r(f(Str, 0, 9), Topic),
    r(f(Uuid, 10, ALL), TopicId),
    f(Array(OFFSET_COMMIT_PARTITION), 0, ALL),
];
const OFFSET_COMMIT_REQUEST: &[Field] = &[
    f(Str, 0, ALL),
    f(I32, 1, ALL),
    f(Str, 1, ALL),
    n(Str, 7, ALL, 7),
    f(I64, 2, 4),
    f(Array(OFFSET_COMMIT_TOPIC), 0, ALL),
];
// OffsetCommitResponse.json
const OFFSET_COMMIT_PARTITION_RESPONSE: &[Field] =
    &[r(f(I32, 0, ALL), Partition), r(f(I16, 0, ALL), Fail)];
const OFFSET_COMMIT_TOPIC_RESPONSE: &[Field] = &[
    r(f(Str, 0, 9), Topic),
    r(f(Uuid, 10, ALL), TopicId),
    f(Array(OFFSET_COMMIT_PARTITION_RESPONSE), 0, ALL),
];
const OFFSET_COMMIT_RESPONSE: &[Field] = &[
    f(I32, 3, ALL),
    f(Array(OFFSET_COMMIT_TOPIC_RESPONSE), 0, ALL),
];

// OffsetFetchRequest.json
const OFFSET_FETCH_TOPIC: &[Field] = &[r(f(Str, 0, 7), Topic), r(f(I32s, 0, 7), Partition)];
const OFFSET_FETCH_GROUP_TOPIC: &[Field] = &[
    r(f(Str, 8, 9), Topic),
    r(f(Uuid, 10, ALL), TopicId),
    r(f(I32s, 8, ALL), Partition),
];
const OFFSET_FETCH_GROUP: &[Field] = &[
    f(Str, 8, ALL),
    n(Str, 9, ALL, 9),
    f(I32, 9, ALL),
    r(n(Array(OFFSET_FETCH_GROUP_TOPIC), 8, ALL, 8), AllWhenNull),
];
const OFFSET_FETCH_REQUEST: &[Field] = &[
    f(Str, 0, 7),
    n(Array(OFFSET_FETCH_TOPIC), 0, 7, 2),
    f(Array(OFFSET_FETCH_GROUP), 8, ALL),
    f(Bool, 7, ALL),
];
// OffsetFetchResponse.json
const OFFSET_FETCH_PARTITION_RESPONSE: &[Field] = &[
    r(f(I32, 0, 7), Partition),
    f(I64, 0, 7),
    f(I32, 5, 7),
    n(Str, 0, 7, 0),
    r(f(I16, 0, 7), Fail),
];
const OFFSET_FETCH_TOPIC_RESPONSE: &[Field] = &[
    r(f(Str, 0, 7), Topic),
    f(Array(OFFSET_FETCH_PARTITION_RESPONSE), 0, 7),
];
const OFFSET_FETCH_GROUP_PARTITION_RESPONSE: &[Field] = &[
    r(f(I32, 8, ALL), Partition),
    f(I64, 8, ALL),
    f(I32, 8, ALL),
    n(Str, 8, ALL, 8),
    r(f(I16, 8, ALL), Fail),
];
const OFFSET_FETCH_GROUP_TOPIC_RESPONSE: &[Field] = &[
    r(f(Str, 8, 9), Topic),
    r(f(Uuid, 10, ALL), TopicId),
    f(Array(OFFSET_FETCH_GROUP_PARTITION_RESPONSE), 8, ALL),
];
const OFFSET_FETCH_GROUP_RESPONSE: &[Field] = &[
    f(Str, 8, ALL),
    f(Array(OFFSET_FETCH_GROUP_TOPIC_RESPONSE), 8, ALL),
    r(f(I16, 8, ALL), TopError),
];
const OFFSET_FETCH_RESPONSE: &[Field] = &[
    f(I32, 3, ALL),
    f(Array(OFFSET_FETCH_TOPIC_RESPONSE), 0, 7),
    r(f(I16, 2, 7), TopError),
    f(Array(OFFSET_FETCH_GROUP_RESPONSE), 8, ALL),
];

// CreateTopicsRequest.json
const CREATE_TOPICS_ASSIGNMENT: &[Field] = &[f(I32, 0, ALL), f(I32s, 0, ALL)];
const CREATE_TOPICS_CONFIG: &[Field] = &[f(Str, 0, ALL), n(Str, 0, ALL, 0)];
const CREATE_TOPICS_TOPIC: &[Field] = &[
    r(f(Str, 0, ALL), Topic),
    f(I32, 0, ALL),
    f(I16, 0, ALL),
    f(Array(CREATE_TOPICS_ASSIGNMENT), 0, ALL),
    f(Array(CREATE_TOPICS_CONFIG), 0, ALL),
];
const CREATE_TOPICS_REQUEST: &[Field] = &[
    f(Array(CREATE_TOPICS_TOPIC), 0, ALL),
    f(I32, 0, ALL),
    f(Bool, 1, ALL),
];
// CreateTopicsResponse.json
const CREATE_TOPICS_CONFIG_RESPONSE: &[Field] = &[
    f(Str, 5, ALL),
    n(Str, 5, ALL, 5),
    f(Bool, 5, ALL),
    f(I8, 5, ALL),
    f(Bool, 5, ALL),
];
const CREATE_TOPICS_TOPIC_RESPONSE: &[Field] = &[
    r(f(Str, 0, ALL), Topic),
    f(Uuid, 7, ALL),
    r(f(I16, 0, ALL), Fail),
    n(Str, 1, ALL, 0),
    f(I32, 5, ALL),
    f(I16, 5, ALL),
    n(Array(CREATE_TOPICS_CONFIG_RESPONSE), 5, ALL, 5),
];
const CREATE_TOPICS_RESPONSE: &[Field] = &[
    f(I32, 2, ALL),
    f(Array(CREATE_TOPICS_TOPIC_RESPONSE), 0, ALL),
];

// DeleteTopicsRequest.json
const DELETE_TOPICS_TOPIC: &[Field] = &[
    r(n(Str, 6, ALL, 6), Topic),
    r(f(Uuid, 6, ALL), ExclusiveTopicId),
];
const DELETE_TOPICS_REQUEST: &[Field] = &[
    f(Array(DELETE_TOPICS_TOPIC), 6, ALL),
    r(f(Strs, 0, 5), Topic),
    f(I32, 0, ALL),
];
// DeleteTopicsResponse.json
const DELETE_TOPICS_TOPIC_RESPONSE: &[Field] = &[
    r(n(Str, 0, ALL, 6), Topic),
    r(f(Uuid, 6, ALL), TopicId),
    r(f(I16, 0, ALL), Fail),
    n(Str, 5, ALL, 5),
];
const DELETE_TOPICS_RESPONSE: &[Field] = &[
    f(I32, 1, ALL),
    f(Array(DELETE_TOPICS_TOPIC_RESPONSE), 0, ALL),
];

// DeleteRecordsRequest.json
const DELETE_RECORDS_PARTITION: &[Field] = &[r(f(I32, 0, ALL), Partition), f(I64, 0, ALL)];
const DELETE_RECORDS_TOPIC: &[Field] = &[
    r(f(Str, 0, ALL), Topic),
    f(Array(DELETE_RECORDS_PARTITION), 0, ALL),
];
const DELETE_RECORDS_REQUEST: &[Field] = &[f(Array(DELETE_RECORDS_TOPIC), 0, ALL), f(I32, 0, ALL)];

// OffsetForLeaderEpochRequest.json
const OFFSET_FOR_LEADER_EPOCH_PARTITION: &[Field] =
    &[r(f(I32, 0, ALL), Partition), f(I32, 2, ALL), f(I32, 0, ALL)];
const OFFSET_FOR_LEADER_EPOCH_TOPIC: &[Field] = &[
    r(f(Str, 0, ALL), Topic),
    f(Array(OFFSET_FOR_LEADER_EPOCH_PARTITION), 0, ALL),
];
const OFFSET_FOR_LEADER_EPOCH_REQUEST: &[Field] = &[
    f(I32, 3, ALL),
    f(Array(OFFSET_FOR_LEADER_EPOCH_TOPIC), 0, ALL),
];

// AddPartitionsToTxnRequest.json
const ADD_PARTITIONS_TOPIC: &[Field] = &[r(f(Str, 0, ALL), Topic), r(f(I32s, 0, ALL), Partition)];
const ADD_PARTITIONS_TRANSACTION: &[Field] = &[
    f(Str, 4, ALL),
    f(I64, 4, ALL),
    f(I16, 4, ALL),
    f(Bool, 4, ALL),
    f(Array(ADD_PARTITIONS_TOPIC), 4, ALL),
];
const ADD_PARTITIONS_TO_TXN_REQUEST: &[Field] = &[
    f(Array(ADD_PARTITIONS_TRANSACTION), 4, ALL),
    f(Str, 0, 3),
    f(I64, 0, 3),
    f(I16, 0, 3),
    f(Array(ADD_PARTITIONS_TOPIC), 0, 3),
];

// TxnOffsetCommitRequest.json
const TXN_OFFSET_COMMIT_PARTITION: &[Field] = &[
    r(f(I32, 0, ALL), Partition),
    f(I64, 0, ALL),
    f(I32, 2, ALL),
    n(Str, 0, ALL, 0),
];
const TXN_OFFSET_COMMIT_TOPIC: &[Field] = &[
    r(f(Str, 0, ALL), Topic),
    f(Array(TXN_OFFSET_COMMIT_PARTITION), 0, ALL),
];
const TXN_OFFSET_COMMIT_REQUEST: &[Field] = &[
    f(Str, 0, ALL),
    f(Str, 0, ALL),
    f(I64, 0, ALL),
    f(I16, 0, ALL),
    f(I32, 3, ALL),
    f(Str, 3, ALL),
    n(Str, 3, ALL, 3),
    f(Array(TXN_OFFSET_COMMIT_TOPIC), 0, ALL),
];

// HeartbeatResponse.json, LeaveGroupResponse.json, SyncGroupResponse.json
const HEARTBEAT_RESPONSE: &[Field] = &[f(I32, 1, ALL), r(f(I16, 0, ALL), TopError)];
const LEAVE_GROUP_MEMBER: &[Field] = &[f(Str, 3, ALL), n(Str, 3, ALL, 3), f(I16, 3, ALL)];
const LEAVE_GROUP_RESPONSE: &[Field] = &[
    f(I32, 1, ALL),
    r(f(I16, 0, ALL), TopError),
    f(Array(LEAVE_GROUP_MEMBER), 3, ALL),
];
const SYNC_GROUP_RESPONSE: &[Field] = &[
    f(I32, 1, ALL),
    r(f(I16, 0, ALL), TopError),
    n(Str, 5, ALL, 5),
    n(Str, 5, ALL, 5),
    f(Bytes, 0, ALL),
];

// InitProducerIdResponse.json
const INIT_PRODUCER_ID_RESPONSE: &[Field] = &[
    f(I32, 0, ALL),
    r(f(I16, 0, ALL), TopError),
    f(I64, 0, ALL),
    f(I16, 0, ALL),
];

// GetTelemetrySubscriptionsResponse.json, PushTelemetryResponse.json. `[]int8` is written as
// `bytes` is (a length, then one byte per element), so it is read as one.
const GET_TELEMETRY_SUBSCRIPTIONS_RESPONSE: &[Field] = &[
    f(I32, 0, ALL),
    r(f(I16, 0, ALL), TopError),
    f(Uuid, 0, ALL),
    f(I32, 0, ALL),
    f(Bytes, 0, ALL),
    f(I32, 0, ALL),
    f(I32, 0, ALL),
    f(Bool, 0, ALL),
    f(Strs, 0, ALL),
];
const PUSH_TELEMETRY_RESPONSE: &[Field] = &[f(I32, 0, ALL), r(f(I16, 0, ALL), TopError)];

// JoinGroupResponse.json, ListGroupsResponse.json, ApiVersionsResponse.json
const JOIN_GROUP_MEMBER: &[Field] = &[f(Str, 0, ALL), n(Str, 5, ALL, 5), f(Bytes, 0, ALL)];
const JOIN_GROUP_RESPONSE: &[Field] = &[
    f(I32, 2, ALL),
    r(f(I16, 0, ALL), TopError),
    f(I32, 0, ALL),
    n(Str, 7, ALL, 7),
    n(Str, 0, ALL, 7),
    f(Str, 0, ALL),
    f(Bool, 9, ALL),
    f(Str, 0, ALL),
    f(Array(JOIN_GROUP_MEMBER), 0, ALL),
];
const LIST_GROUPS_GROUP: &[Field] = &[
    f(Str, 0, ALL),
    f(Str, 0, ALL),
    f(Str, 4, ALL),
    f(Str, 5, ALL),
];
const LIST_GROUPS_RESPONSE: &[Field] = &[
    f(I32, 1, ALL),
    r(f(I16, 0, ALL), TopError),
    f(Array(LIST_GROUPS_GROUP), 0, ALL),
];
const API_VERSIONS_KEY: &[Field] = &[f(I16, 0, ALL), f(I16, 0, ALL), f(I16, 0, ALL)];
const API_VERSIONS_RESPONSE: &[Field] = &[
    r(f(I16, 0, ALL), TopError),
    f(Array(API_VERSIONS_KEY), 0, ALL),
    f(I32, 1, ALL),
];

// FindCoordinatorRequest.json, FindCoordinatorResponse.json
const FIND_COORDINATOR_REQUEST: &[Field] = &[f(Str, 0, 3), f(I8, 1, ALL), f(Strs, 4, ALL)];
const FIND_COORDINATOR_COORDINATOR: &[Field] = &[
    f(Str, 4, ALL),
    f(I32, 4, ALL),
    f(Str, 4, ALL),
    f(I32, 4, ALL),
    r(f(I16, 4, ALL), TopError),
    n(Str, 4, ALL, 4),
];
const FIND_COORDINATOR_RESPONSE: &[Field] = &[
    f(I32, 1, ALL),
    r(f(I16, 0, 3), TopError),
    n(Str, 1, 3, 1),
    f(I32, 0, 3),
    f(Str, 0, 3),
    f(I32, 0, 3),
    f(Array(FIND_COORDINATOR_COORDINATOR), 4, ALL),
];

// DescribeConfigsRequest.json, DescribeConfigsResponse.json
const DESCRIBE_CONFIGS_RESOURCE: &[Field] = &[
    r(f(I8, 0, ALL), ConfigType),
    r(f(Str, 0, ALL), ResourceName),
    n(Strs, 0, ALL, 0),
];
const DESCRIBE_CONFIGS_REQUEST: &[Field] = &[
    f(Array(DESCRIBE_CONFIGS_RESOURCE), 0, ALL),
    f(Bool, 1, ALL),
    f(Bool, 3, ALL),
];
const DESCRIBE_CONFIGS_SYNONYM: &[Field] = &[f(Str, 1, ALL), n(Str, 1, ALL, 0), f(I8, 1, ALL)];
const DESCRIBE_CONFIGS_CONFIG: &[Field] = &[
    f(Str, 0, ALL),
    n(Str, 0, ALL, 0),
    f(Bool, 0, ALL),
    f(Bool, 0, 0),
    f(I8, 1, ALL),
    f(Bool, 0, ALL),
    f(Array(DESCRIBE_CONFIGS_SYNONYM), 1, ALL),
    f(I8, 3, ALL),
    n(Str, 3, ALL, 0),
];
const DESCRIBE_CONFIGS_RESULT: &[Field] = &[
    r(f(I16, 0, ALL), Fail),
    n(Str, 0, ALL, 0),
    r(f(I8, 0, ALL), ConfigType),
    r(f(Str, 0, ALL), ResourceName),
    f(Array(DESCRIBE_CONFIGS_CONFIG), 0, ALL),
];
const DESCRIBE_CONFIGS_RESPONSE: &[Field] =
    &[f(I32, 0, ALL), f(Array(DESCRIBE_CONFIGS_RESULT), 0, ALL)];

// AlterConfigsRequest.json, AlterConfigsResponse.json
const ALTER_CONFIGS_CONFIG: &[Field] = &[f(Str, 0, ALL), n(Str, 0, ALL, 0)];
const ALTER_CONFIGS_RESOURCE: &[Field] = &[
    r(f(I8, 0, ALL), ConfigType),
    r(f(Str, 0, ALL), ResourceName),
    f(Array(ALTER_CONFIGS_CONFIG), 0, ALL),
];
const ALTER_CONFIGS_REQUEST: &[Field] =
    &[f(Array(ALTER_CONFIGS_RESOURCE), 0, ALL), f(Bool, 0, ALL)];
const ALTER_CONFIGS_RESULT: &[Field] = &[
    r(f(I16, 0, ALL), Fail),
    n(Str, 0, ALL, 0),
    r(f(I8, 0, ALL), ConfigType),
    r(f(Str, 0, ALL), ResourceName),
];
const ALTER_CONFIGS_RESPONSE: &[Field] = &[f(I32, 0, ALL), f(Array(ALTER_CONFIGS_RESULT), 0, ALL)];

// IncrementalAlterConfigsRequest.json, IncrementalAlterConfigsResponse.json (the response's
// layout is AlterConfigs')
const INCREMENTAL_ALTER_CONFIGS_CONFIG: &[Field] =
    &[f(Str, 0, ALL), f(I8, 0, ALL), n(Str, 0, ALL, 0)];
const INCREMENTAL_ALTER_CONFIGS_RESOURCE: &[Field] = &[
    r(f(I8, 0, ALL), ConfigType),
    r(f(Str, 0, ALL), ResourceName),
    f(Array(INCREMENTAL_ALTER_CONFIGS_CONFIG), 0, ALL),
];
const INCREMENTAL_ALTER_CONFIGS_REQUEST: &[Field] = &[
    f(Array(INCREMENTAL_ALTER_CONFIGS_RESOURCE), 0, ALL),
    f(Bool, 0, ALL),
];

// CreateAclsRequest.json, CreateAclsResponse.json
const CREATE_ACLS_CREATION: &[Field] = &[
    r(f(I8, 0, ALL), AclType),
    r(f(Str, 0, ALL), ResourceName),
    r(f(I8, 1, ALL), AclPattern),
    f(Str, 0, ALL),
    f(Str, 0, ALL),
    f(I8, 0, ALL),
    f(I8, 0, ALL),
];
const CREATE_ACLS_REQUEST: &[Field] = &[f(Array(CREATE_ACLS_CREATION), 0, ALL)];
const CREATE_ACLS_RESULT: &[Field] = &[r(f(I16, 0, ALL), TopError), n(Str, 0, ALL, 0)];
const CREATE_ACLS_RESPONSE: &[Field] = &[f(I32, 0, ALL), f(Array(CREATE_ACLS_RESULT), 0, ALL)];

// DescribeAclsRequest.json, DescribeAclsResponse.json
const ACL_FILTER: &[Field] = &[
    r(f(I8, 0, ALL), AclType),
    r(n(Str, 0, ALL, 0), ResourceName),
    r(f(I8, 1, ALL), AclPattern),
    n(Str, 0, ALL, 0),
    n(Str, 0, ALL, 0),
    f(I8, 0, ALL),
    f(I8, 0, ALL),
];
const DESCRIBE_ACLS_ACL: &[Field] = &[f(Str, 0, ALL), f(Str, 0, ALL), f(I8, 0, ALL), f(I8, 0, ALL)];
const DESCRIBE_ACLS_RESOURCE: &[Field] = &[
    f(I8, 0, ALL),
    f(Str, 0, ALL),
    f(I8, 1, ALL),
    f(Array(DESCRIBE_ACLS_ACL), 0, ALL),
];
const DESCRIBE_ACLS_RESPONSE: &[Field] = &[
    f(I32, 0, ALL),
    r(f(I16, 0, ALL), TopError),
    n(Str, 0, ALL, 0),
    f(Array(DESCRIBE_ACLS_RESOURCE), 0, ALL),
];

// DeleteAclsRequest.json, DeleteAclsResponse.json
const DELETE_ACLS_REQUEST: &[Field] = &[f(Array(ACL_FILTER), 0, ALL)];
const DELETE_ACLS_MATCHING: &[Field] = &[
    f(I16, 0, ALL),
    n(Str, 0, ALL, 0),
    f(I8, 0, ALL),
    f(Str, 0, ALL),
    f(I8, 1, ALL),
    f(Str, 0, ALL),
    f(Str, 0, ALL),
    f(I8, 0, ALL),
    f(I8, 0, ALL),
];
const DELETE_ACLS_RESULT: &[Field] = &[
    r(f(I16, 0, ALL), TopError),
    n(Str, 0, ALL, 0),
    f(Array(DELETE_ACLS_MATCHING), 0, ALL),
];
const DELETE_ACLS_RESPONSE: &[Field] = &[f(I32, 0, ALL), f(Array(DELETE_ACLS_RESULT), 0, ALL)];

/// One API as the oracle knows it: key, versions, first flexible version, request and (when a
/// denial is composed) response layouts.
struct Message {
    key: i16,
    low: i16,
    high: i16,
    flexible: i16,
    request: &'static [Field],
    response: Option<&'static [Field]>,
}

const MESSAGES: &[Message] = &[
    Message {
        key: 0,
        low: 3,
        high: 13,
        flexible: 9,
        request: PRODUCE_REQUEST,
        response: Some(PRODUCE_RESPONSE),
    },
    Message {
        key: 1,
        low: 4,
        high: 18,
        flexible: 12,
        request: FETCH_REQUEST,
        response: Some(FETCH_RESPONSE),
    },
    Message {
        key: 2,
        low: 1,
        high: 11,
        flexible: 6,
        request: LIST_OFFSETS_REQUEST,
        response: Some(LIST_OFFSETS_RESPONSE),
    },
    Message {
        key: 3,
        low: 0,
        high: 13,
        flexible: 9,
        request: METADATA_REQUEST,
        response: Some(METADATA_RESPONSE),
    },
    Message {
        key: 8,
        low: 2,
        high: 10,
        flexible: 8,
        request: OFFSET_COMMIT_REQUEST,
        response: Some(OFFSET_COMMIT_RESPONSE),
    },
    Message {
        key: 9,
        low: 1,
        high: 10,
        flexible: 6,
        request: OFFSET_FETCH_REQUEST,
        response: Some(OFFSET_FETCH_RESPONSE),
    },
    Message {
        key: 19,
        low: 2,
        high: 7,
        flexible: 5,
        request: CREATE_TOPICS_REQUEST,
        response: Some(CREATE_TOPICS_RESPONSE),
    },
    Message {
        key: 20,
        low: 1,
        high: 6,
        flexible: 4,
        request: DELETE_TOPICS_REQUEST,
        response: Some(DELETE_TOPICS_RESPONSE),
    },
    Message {
        key: 10,
        low: 0,
        high: 6,
        flexible: 3,
        request: FIND_COORDINATOR_REQUEST,
        response: Some(FIND_COORDINATOR_RESPONSE),
    },
    Message {
        key: 21,
        low: 0,
        high: 2,
        flexible: 2,
        request: DELETE_RECORDS_REQUEST,
        response: None,
    },
    Message {
        key: 23,
        low: 2,
        high: 4,
        flexible: 4,
        request: OFFSET_FOR_LEADER_EPOCH_REQUEST,
        response: None,
    },
    Message {
        key: 24,
        low: 0,
        high: 5,
        flexible: 3,
        request: ADD_PARTITIONS_TO_TXN_REQUEST,
        response: None,
    },
    Message {
        key: 28,
        low: 0,
        high: 5,
        flexible: 3,
        request: TXN_OFFSET_COMMIT_REQUEST,
        response: None,
    },
    Message {
        key: 29,
        low: 1,
        high: 3,
        flexible: 2,
        request: ACL_FILTER,
        response: Some(DESCRIBE_ACLS_RESPONSE),
    },
    Message {
        key: 30,
        low: 1,
        high: 3,
        flexible: 2,
        request: CREATE_ACLS_REQUEST,
        response: Some(CREATE_ACLS_RESPONSE),
    },
    Message {
        key: 31,
        low: 1,
        high: 3,
        flexible: 2,
        request: DELETE_ACLS_REQUEST,
        response: Some(DELETE_ACLS_RESPONSE),
    },
    Message {
        key: 32,
        low: 1,
        high: 4,
        flexible: 4,
        request: DESCRIBE_CONFIGS_REQUEST,
        response: Some(DESCRIBE_CONFIGS_RESPONSE),
    },
    Message {
        key: 33,
        low: 0,
        high: 2,
        flexible: 2,
        request: ALTER_CONFIGS_REQUEST,
        response: Some(ALTER_CONFIGS_RESPONSE),
    },
    Message {
        key: 44,
        low: 0,
        high: 1,
        flexible: 1,
        request: INCREMENTAL_ALTER_CONFIGS_REQUEST,
        response: Some(ALTER_CONFIGS_RESPONSE),
    },
];

/// A decoded or generated value.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Int(i64),
    Uuid([u8; 16]),
    Str(Option<Vec<u8>>),
    I32s(Option<Vec<i32>>),
    Strs(Option<Vec<Vec<u8>>>),
    Array(Option<Vec<Vec<Val>>>),
}

/// A tiny deterministic generator, seeded by proptest.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn name(&mut self) -> Vec<u8> {
        let len = 1 + self.below(6) as usize;
        (0..len)
            .map(|_| b"abcxyz.-_0"[self.below(10) as usize])
            .collect()
    }
}

fn present(field: &Field, version: i16) -> bool {
    (field.low..=field.high).contains(&version)
}

/// Values for `fields` at `version`. A topic entry that a non-zero id and a name would make
/// ambiguous (see [`ambiguity`]) keeps its name and loses its id, or loses its name (for a
/// Metadata entry, to an empty one or null): requests with such entries are refused
/// ([`check_ambiguous_entries_are_refused`]).
fn generate(fields: &[Field], version: i16, g: &mut Gen, depth: usize) -> Vec<Val> {
    let mut vals = generate_each(fields, version, g, depth);
    if let Some((id_at, name_at, ruling)) = ambiguity(fields, version) {
        let named = match &vals[name_at] {
            Val::Str(Some(name)) => !ruling || !name.is_empty(),
            _ => false,
        };
        if vals[id_at] != Val::Uuid([0; 16]) && named {
            match g.below(3) {
                0 => vals[id_at] = Val::Uuid([0; 16]),
                1 if ruling => vals[name_at] = Val::Str(Some(Vec::new())),
                _ => vals[name_at] = Val::Str(None),
            }
        }
    }
    vals
}

/// Where a topic entry of `fields` at `version` carries both a topic id and a name that
/// brokers read differently: the places of the id and the name among the present fields, and
/// whether the id is a [`RulingTopicId`] (refused with a non-empty name) rather than an
/// [`ExclusiveTopicId`] (refused with any name).
fn ambiguity(fields: &[Field], version: i16) -> Option<(usize, usize, bool)> {
    let present = || fields.iter().filter(|field| present(field, version));
    let id = present().position(|f| matches!(f.role, RulingTopicId | ExclusiveTopicId))?;
    let name = present().position(|field| field.role == Topic)?;
    let ruling = present().nth(id).is_some_and(|f| f.role == RulingTopicId);
    Some((id, name, ruling))
}

fn generate_each(fields: &[Field], version: i16, g: &mut Gen, depth: usize) -> Vec<Val> {
    fields
        .iter()
        .filter(|field| present(field, version))
        .map(|field| {
            let null = version >= field.nullable && g.below(4) == 0;
            match field.ty {
                I8 | I16 | I32 | I64 | Bool => Val::Int(match field.ty {
                    Bool => g.below(2) as i64,
                    _ if field.role == Epoch => [0, -1, 1, 7, -2][g.below(5) as usize],
                    _ if field.role == ConfigType => {
                        [2, 2, 2, 4, 8, 16, 32, 0, 3][g.below(9) as usize]
                    }
                    _ if field.role == AclType => g.below(9) as i64,
                    _ if field.role == AclPattern => [1, 2, 3, 3, 3, 4][g.below(6) as usize],
                    I8 => g.below(3) as i64,
                    _ if field.role == Acks => [0, 1, -1][g.below(3) as usize],
                    _ => g.below(40) as i64 - 2,
                }),
                Uuid => Val::Uuid(std::array::from_fn(|_| g.below(3) as u8)),
                Str if null => Val::Str(None),
                Str if field.role == ResourceName && g.below(8) == 0 => {
                    Val::Str(Some(b"*".to_vec()))
                }
                Str => Val::Str(Some(g.name())),
                Bytes if null => Val::Str(None),
                Bytes => Val::Str(Some((0..g.below(40)).map(|i| i as u8).collect())),
                I32s => Val::I32s(Some((0..g.below(4)).map(|_| g.below(8) as i32).collect())),
                Strs => Val::Strs(Some((0..g.below(4)).map(|_| g.name()).collect())),
                Array(_) if null => Val::Array(None),
                Array(inner) => {
                    let count = if depth > 3 { 0 } else { g.below(4) };
                    Val::Array(Some(
                        (0..count)
                            .map(|_| generate(inner, version, g, depth + 1))
                            .collect(),
                    ))
                }
            }
        })
        .collect()
}

/// Encodes values by their fields, in the version's encoding; every structure of a flexible
/// version gets `tags` unknown tagged fields.
struct Encoder {
    out: Vec<u8>,
    flexible: bool,
    tags: u8,
}

impl Encoder {
    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.out.push(byte);
                return;
            }
            self.out.push(byte | 0x80);
        }
    }

    fn len(&mut self, n: Option<usize>, classic_width: usize) {
        match (self.flexible, n) {
            (true, None) => self.varint(0),
            (true, Some(n)) => self.varint(n as u64 + 1),
            (false, n) => {
                let v = n.map_or(-1, |n| n as i64);
                let bytes = v.to_be_bytes();
                self.out.extend_from_slice(&bytes[8 - classic_width..]);
            }
        }
    }

    fn bytes(&mut self, v: &Option<Vec<u8>>, classic_width: usize) {
        self.len(v.as_ref().map(Vec::len), classic_width);
        if let Some(v) = v {
            self.out.extend_from_slice(v);
        }
    }

    fn tagged(&mut self) {
        if !self.flexible {
            return;
        }
        self.varint(u64::from(self.tags));
        for tag in 0..self.tags {
            self.varint(u64::from(tag) * 3);
            self.varint(2);
            self.out.extend_from_slice(&[tag, 0xee]);
        }
    }

    fn structure(&mut self, fields: &[Field], version: i16, vals: &[Val]) {
        let present = fields.iter().filter(|field| present(field, version));
        for (field, val) in present.zip(vals) {
            match (field.ty, val) {
                (I8 | Bool, Val::Int(v)) => self.out.push(*v as u8),
                (I16, Val::Int(v)) => self.out.extend_from_slice(&(*v as i16).to_be_bytes()),
                (I32, Val::Int(v)) => self.out.extend_from_slice(&(*v as i32).to_be_bytes()),
                (I64, Val::Int(v)) => self.out.extend_from_slice(&v.to_be_bytes()),
                (Uuid, Val::Uuid(v)) => self.out.extend_from_slice(v),
                (Str, Val::Str(v)) => self.bytes(v, 2),
                (Bytes, Val::Str(v)) => self.bytes(v, 4),
                (I32s, Val::I32s(v)) => {
                    self.len(v.as_ref().map(Vec::len), 4);
                    for i in v.iter().flatten() {
                        self.out.extend_from_slice(&i.to_be_bytes());
                    }
                }
                (Strs, Val::Strs(v)) => {
                    self.len(v.as_ref().map(Vec::len), 4);
                    for s in v.iter().flatten() {
                        self.bytes(&Some(s.clone()), 2);
                    }
                }
                (Array(inner), Val::Array(v)) => {
                    self.len(v.as_ref().map(Vec::len), 4);
                    for element in v.iter().flatten() {
                        self.structure(inner, version, element);
                    }
                }
                _ => unreachable!("a value of another type"),
            }
        }
        self.tagged();
    }
}

/// Decodes by fields; `None` when the bytes do not follow them.
struct Decoder<'a> {
    bytes: &'a [u8],
    flexible: bool,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.bytes.get(..n)?;
        self.bytes = &self.bytes[n..];
        Some(taken)
    }

    fn int(&mut self, width: usize) -> Option<i64> {
        let bytes = self.take(width)?;
        let mut v: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
        for b in bytes {
            v = (v << 8) | i64::from(*b);
        }
        Some(v)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0;
        for shift in (0..35).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn len(&mut self, classic_width: usize) -> Option<Option<usize>> {
        let n = match self.flexible {
            true => self.varint()? as i64 - 1,
            false => self.int(classic_width)?,
        };
        match n {
            -1 => Some(None),
            n if n < 0 => None,
            n => Some(Some(n as usize)),
        }
    }

    fn bytes(&mut self, classic_width: usize) -> Option<Option<Vec<u8>>> {
        match self.len(classic_width)? {
            None => Some(None),
            Some(n) => Some(Some(self.take(n)?.to_vec())),
        }
    }

    fn tagged(&mut self) -> Option<()> {
        if self.flexible {
            for _ in 0..self.varint()? {
                self.varint()?;
                let size = self.varint()? as usize;
                self.take(size)?;
            }
        }
        Some(())
    }

    fn structure(&mut self, fields: &[Field], version: i16) -> Option<Vec<Val>> {
        let mut vals = Vec::new();
        for field in fields.iter().filter(|field| present(field, version)) {
            let nullable = version >= field.nullable;
            let val = match field.ty {
                I8 | Bool => Val::Int(self.int(1)?),
                I16 => Val::Int(self.int(2)?),
                I32 => Val::Int(self.int(4)?),
                I64 => Val::Int(self.int(8)?),
                Uuid => Val::Uuid(self.take(16)?.try_into().ok()?),
                Str => Val::Str(self.bytes(2)?).filter_null(nullable)?,
                Bytes => Val::Str(self.bytes(4)?).filter_null(nullable)?,
                I32s => {
                    let n = self.len(4)?;
                    Val::I32s(match n {
                        None => None,
                        Some(n) => Some(
                            (0..n)
                                .map(|_| self.int(4).map(|v| v as i32))
                                .collect::<Option<_>>()?,
                        ),
                    })
                }
                Strs => {
                    let n = self.len(4)?;
                    Val::Strs(match n {
                        None => None,
                        Some(n) => Some(
                            (0..n)
                                .map(|_| self.bytes(2).flatten())
                                .collect::<Option<_>>()?,
                        ),
                    })
                }
                Array(inner) => {
                    let n = self.len(4)?;
                    Val::Array(match n {
                        None => None,
                        Some(n) => Some(
                            (0..n)
                                .map(|_| self.structure(inner, version))
                                .collect::<Option<_>>()?,
                        ),
                    })
                    .filter_null(nullable)?
                }
            };
            vals.push(val);
        }
        self.tagged()?;
        Some(vals)
    }
}

impl Val {
    /// `None` when a null stands where the definition allows none.
    fn filter_null(self, nullable: bool) -> Option<Val> {
        match (&self, nullable) {
            (Val::Str(None) | Val::Array(None), false) => None,
            _ => Some(self),
        }
    }
}

/// A topic as the oracle sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum T {
    Name(Vec<u8>),
    Id([u8; 16]),
    /// Topics beyond one name.
    Any,
}

/// The topic a structure names: its ruling id when not zero, else its name when it has a
/// non-empty one, else its id; for a config or ACL resource, by its type (and pattern).
fn topic_of(fields: &[Field], version: i16, vals: &[Val]) -> Option<T> {
    let present = fields
        .iter()
        .filter(|field| present(field, version))
        .zip(vals);
    let mut id = None;
    let mut name = None;
    let (mut config, mut acl, mut pattern, mut resource) = (None, None, 3, None);
    for (field, val) in present.clone() {
        match (field.role, val) {
            (ConfigType, Val::Int(t)) => config = Some(*t),
            (AclType, Val::Int(t)) => acl = Some(*t),
            (AclPattern, Val::Int(p)) => pattern = *p,
            (ResourceName, Val::Str(n)) => resource = Some(n.clone()),
            _ => {}
        }
    }
    match (config, acl, resource) {
        (Some(2), _, Some(Some(n))) => return Some(T::Name(n)),
        (Some(4 | 8 | 16 | 32), _, _) => return None,
        (Some(_), _, _) => return Some(T::Any),
        (_, Some(2), Some(Some(n))) if pattern == 3 && n != b"*" => return Some(T::Name(n)),
        (_, Some(3..=7), _) => return None,
        (_, Some(_), _) => return Some(T::Any),
        _ => {}
    }
    for (field, val) in present {
        match (field.role, val) {
            (Topic, Val::Str(Some(n))) if !n.is_empty() => name = Some(T::Name(n.clone())),
            (TopicId, Val::Uuid(u)) => id = Some(T::Id(*u)),
            (RulingTopicId, Val::Uuid(u)) if *u != [0; 16] => return Some(T::Id(*u)),
            (RulingTopicId | ExclusiveTopicId, Val::Uuid(u)) => id = Some(T::Id(*u)),
            _ => {}
        }
    }
    name.or(id)
}

/// Every (topic, partition) a message names, in order, and every error code it carries with
/// the topic and partition it applies to.
#[derive(Debug, Default)]
struct Named {
    topics: Vec<T>,
    partitions: Vec<(T, Option<i32>)>,
    errors: Vec<(Option<T>, Option<i32>, i64)>,
    top_errors: Vec<i64>,
    /// Some topic array asks for all topics.
    all: bool,
}

fn walk(fields: &[Field], version: i16, vals: &[Val], topic: Option<&T>, named: &mut Named) {
    let own = topic_of(fields, version, vals);
    if let Some(t) = &own {
        named.topics.push(t.clone());
    }
    let topic = own.as_ref().or(topic);
    let mut partition = None;
    let mut has_partitions = false;
    let mut errors = Vec::new();
    for (field, val) in fields
        .iter()
        .filter(|field| present(field, version))
        .zip(vals)
    {
        match (field.role, field.ty, val) {
            (Topic, Strs, Val::Strs(names)) => {
                for name in names.iter().flatten() {
                    named.topics.push(T::Name(name.clone()));
                    named.partitions.push((T::Name(name.clone()), None));
                }
            }
            (Partition, I32s, Val::I32s(list)) => {
                has_partitions = true;
                for p in list.iter().flatten() {
                    named.partitions.push((topic.cloned().unwrap(), Some(*p)));
                }
            }
            (Partition, _, Val::Int(p)) => partition = Some(*p as i32),
            (Fail, _, Val::Int(e)) => errors.push(*e),
            (TopError, _, Val::Int(e)) => named.top_errors.push(*e),
            (AllWhenNull, _, Val::Array(None)) => named.all = true,
            (_, Array(inner), Val::Array(elements)) => {
                if inner.iter().any(|f| f.role == Partition) {
                    has_partitions = true;
                }
                for element in elements.iter().flatten() {
                    walk(inner, version, element, topic, named);
                }
            }
            _ => {}
        }
    }
    if let Some(p) = partition {
        named.partitions.push((topic.cloned().unwrap(), Some(p)));
    } else if own.is_some() && !has_partitions {
        named.partitions.push((own.clone().unwrap(), None));
    }
    for e in errors {
        named.errors.push((topic.cloned(), partition, e));
    }
}

/// A whole request frame (without its length) of `message` at `version`, correlation id 77.
fn request_frame(
    message: &Message,
    version: i16,
    vals: &[Val],
    client: Option<&[u8]>,
    tags: u8,
) -> Vec<u8> {
    request_frame_with(message, version, 77, vals, client, tags)
}

/// A whole request frame (without its length) of `message` at `version`: request header v1,
/// or v2 (with `tags` unknown tagged fields) where flexible, then the body.
fn request_frame_with(
    message: &Message,
    version: i16,
    correlation_id: i32,
    vals: &[Val],
    client: Option<&[u8]>,
    tags: u8,
) -> Vec<u8> {
    let flexible = version >= message.flexible;
    let mut e = Encoder {
        out: Vec::new(),
        flexible: false,
        tags,
    };
    e.out.extend_from_slice(&message.key.to_be_bytes());
    e.out.extend_from_slice(&version.to_be_bytes());
    e.out.extend_from_slice(&correlation_id.to_be_bytes());
    e.bytes(&client.map(<[u8]>::to_vec), 2);
    e.flexible = flexible;
    e.tagged();
    e.structure(message.request, version, vals);
    e.out
}

fn to_topic_ref(t: TopicRef<'_>) -> T {
    match t {
        TopicRef::Name(name) => T::Name(name.to_vec()),
        TopicRef::Id(id) => T::Id(id),
        TopicRef::Any => T::Any,
    }
}

/// The topics a Metadata v0 request with an empty array, or any request whose only topic
/// array is null, names: none, as the oracle's walk finds; and none either for a request with
/// a topic array asking for all topics among others.
fn expected_topics(message: &Message, version: i16, vals: &[Val]) -> Named {
    let mut named = Named::default();
    walk(message.request, version, vals, None, &mut named);
    if named.all {
        named.topics.clear();
    }
    named
}

fn check(message: &Message, version: i16, seed: u64, tags: u8) -> Result<(), TestCaseError> {
    let mut g = Gen(seed | 1);
    let vals = generate(message.request, version, &mut g, 0);
    let correlation_id = g.next() as i32;
    let client = match g.below(4) {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some((0..g.below(300)).map(|_| g.next() as u8).collect()),
    };
    let frame = request_frame_with(
        message,
        version,
        correlation_id,
        &vals,
        client.as_deref(),
        tags,
    );
    let request = Request::parse(&frame).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    check_ambiguous_entries_are_refused(message, version, &vals)?;
    prop_assert_eq!(request.header.api.key, message.key);
    prop_assert_eq!(request.header.api_version, version);
    prop_assert_eq!(request.header.correlation_id, correlation_id);
    prop_assert_eq!(request.header.client_id, client.as_deref());
    let expected = expected_topics(message, version, &vals);
    let topics: Vec<T> = request.topics().map(to_topic_ref).collect();
    prop_assert_eq!(&topics, &expected.topics);
    // Kept as the body was read, nested arrays and resources included, up to KEPT_TOPICS.
    let kept: Option<Vec<T>> = request
        .kept_topics()
        .map(|kept| kept.iter().copied().map(to_topic_ref).collect());
    match expected.topics.len() <= KEPT_TOPICS {
        true => prop_assert_eq!(kept.as_ref(), Some(&expected.topics)),
        false => prop_assert_eq!(kept, None),
    }

    let mut out = Vec::new();
    let denial = request.write_denial(&mut out);
    let Some(layout) = message.response else {
        prop_assert_eq!(denial, Denial::Unsupported);
        return Ok(());
    };
    let acks_zero = message.key == PRODUCE && vals.get(1) == Some(&Val::Int(0));
    if acks_zero {
        prop_assert_eq!(denial, Denial::NoResponse);
        prop_assert!(out.is_empty());
        return Ok(());
    }
    prop_assert_eq!(denial, Denial::Written);
    prop_assert_eq!(
        u32::from_be_bytes(out[..4].try_into().unwrap()) as usize,
        out.len() - 4
    );
    prop_assert_eq!(&out[4..8], &correlation_id.to_be_bytes());
    let flexible = version >= message.flexible;
    let mut d = Decoder {
        bytes: &out[8..],
        flexible,
    };
    d.tagged().unwrap();
    let decoded = d.structure(layout, version);
    prop_assert!(decoded.is_some(), "the denial does not decode");
    prop_assert!(
        d.bytes.is_empty(),
        "{} bytes after the denial",
        d.bytes.len()
    );
    let mut named = Named::default();
    walk(layout, version, &decoded.unwrap(), None, &mut named);
    let epoch = message
        .request
        .iter()
        .filter(|field| present(field, version))
        .zip(&vals)
        .find_map(|(field, val)| match (field.role, val) {
            (Epoch, Val::Int(epoch)) => Some(*epoch),
            _ => None,
        });
    if epoch.is_some_and(|epoch| epoch != 0 && epoch != -1) {
        prop_assert!(
            named.errors.is_empty(),
            "an incremental fetch fails no partition"
        );
        prop_assert_eq!(
            named.top_errors,
            [i64::from(fetch::FETCH_SESSION_ID_NOT_FOUND)]
        );
        return Ok(());
    }
    if [DESCRIBE_ACLS, CREATE_ACLS, DELETE_ACLS].contains(&message.key) {
        prop_assert!(named.errors.is_empty());
        let cluster = i64::from(CLUSTER_AUTHORIZATION_FAILED);
        prop_assert!(named.top_errors.iter().all(|e| *e == cluster));
        return Ok(());
    }
    let denied: Vec<(T, Option<i32>)> = named
        .errors
        .iter()
        .filter_map(|(t, p, e)| match t {
            Some(t) => {
                assert_eq!(*e, i64::from(TOPIC_AUTHORIZATION_FAILED));
                Some((t.clone(), *p))
            }
            None => {
                assert_eq!(*e, i64::from(CLUSTER_AUTHORIZATION_FAILED), "not a topic");
                None
            }
        })
        .collect();
    prop_assert_eq!(
        &denied,
        &expected.partitions,
        "every named partition denied"
    );
    for e in named.top_errors {
        prop_assert!([0, 30, 31, 53].contains(&e));
    }
    Ok(())
}

/// The request of `vals` at `version` with the first entry of its topic array that may be
/// ambiguous (Metadata v10+, DeleteTopics v6+) given both a non-zero id and a non-empty name,
/// whatever it had: refused, as brokers read such an entry differently (Metadata: Kafka's by
/// its id, tansu's by its name; DeleteTopics: Kafka refuses it, tansu reads the id).
fn check_ambiguous_entries_are_refused(
    message: &Message,
    version: i16,
    vals: &[Val],
) -> Result<(), TestCaseError> {
    let present = message
        .request
        .iter()
        .filter(|field| present(field, version));
    for (at, (field, val)) in present.zip(vals).enumerate() {
        let (Array(inner), Val::Array(Some(entries))) = (field.ty, val) else {
            continue;
        };
        let Some((id_at, name_at, _)) = ambiguity(inner, version) else {
            continue;
        };
        if entries.is_empty() {
            return Ok(());
        }
        let mut entries = entries.clone();
        entries[0][id_at] = Val::Uuid([9; 16]);
        entries[0][name_at] = Val::Str(Some(b"x".to_vec()));
        let mut both = vals.to_vec();
        both[at] = Val::Array(Some(entries));
        let frame = request_frame(message, version, &both, None, 0);
        prop_assert!(
            matches!(
                Request::parse(&frame),
                Err(Error::Wire(WireError::Ambiguous(_)))
            ),
            "v{} refuses an entry with both an id and a name",
            version
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any request of any inspected API and version, built by the oracle's encoder from the
    /// definitions (with unknown tagged fields where flexible), parses to the topics the
    /// oracle sees; its denial decodes by the response definition and fails exactly the
    /// topics and partitions named.
    #[test]
    fn requests_round_trip_and_denials_decode(
        index in 0..MESSAGES.len(),
        version_pick in any::<u16>(),
        seed in any::<u64>(),
        tags in 0u8..3,
    ) {
        let message = &MESSAGES[index];
        let version = message.low + (version_pick % (message.high - message.low + 1) as u16) as i16;
        check(message, version, seed, tags)?;
    }

    /// No request of an inspected API, however cut or corrupted, makes the parser panic, and
    /// a cut one is always refused.
    #[test]
    fn cut_and_corrupted_requests_are_errors_not_panics(
        index in 0..MESSAGES.len(),
        version_pick in any::<u16>(),
        seed in any::<u64>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let message = &MESSAGES[index];
        let version = message.low + (version_pick % (message.high - message.low + 1) as u16) as i16;
        let vals = generate(message.request, version, &mut Gen(seed | 1), 0);
        let frame = request_frame(message, version, &vals, None, 1);
        let at = cut.index(frame.len());
        prop_assert!(Request::parse(&frame[..at]).is_err());
        let mut corrupted = frame.clone();
        let i = flip.index(corrupted.len());
        corrupted[i] = byte;
        if let Ok(request) = Request::parse(&corrupted) {
            let _ = request.topics().count();
            let _ = request.write_denial(&mut Vec::new());
        }
    }
}

#[test]
fn every_inspected_version_is_exercised() {
    for message in MESSAGES {
        let api = Api::by_key(message.key).unwrap();
        assert_eq!(
            api.versions,
            Some((message.low, message.high)),
            "{}",
            api.name
        );
        assert_eq!(api.flexible_from, Some(message.flexible), "{}", api.name);
        for version in message.low..=message.high {
            for seed in 1..40 {
                check(message, version, seed * 7919, (seed % 3) as u8).unwrap();
            }
        }
    }
}

#[test]
fn versions_outside_the_range_are_refused() {
    let frame = request_frame(&MESSAGES[0], 2, &[], None, 0);
    assert_eq!(
        Request::parse(&frame).unwrap_err(),
        Error::UnsupportedVersion {
            api: "Produce",
            version: 2
        }
    );
}

#[test]
fn apis_that_name_no_topics_are_not_read() {
    let frame = b"\x00\x12\x00\x03\x00\x00\x00\x09\x00\x01c\x00anything";
    let request = Request::parse(frame).unwrap();
    assert!(matches!(request.body, Body::Unread));
    assert_eq!(request.topics().count(), 0);
}

#[test]
fn metadata_for_all_topics_and_auto_creation() {
    let v12_all = b"\x00\x03\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x00\x01\x00\x00";
    let request = Request::parse(v12_all).unwrap();
    let Body::Metadata(metadata) = request.body else {
        unreachable!()
    };
    assert!(metadata.all_topics(12));
    assert!(metadata.allow_auto_topic_creation);
    let mut out = Vec::new();
    assert_eq!(request.write_denial(&mut out), Denial::Written);
    let mut d = Decoder {
        bytes: &out[8..],
        flexible: true,
    };
    d.tagged().unwrap();
    let vals = d.structure(METADATA_RESPONSE, 12).unwrap();
    assert_eq!(vals[4], Val::Array(Some(Vec::new())));
    let v13_all = b"\x00\x03\x00\x0d\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00";
    let request = Request::parse(v13_all).unwrap();
    let Body::Metadata(metadata) = request.body else {
        unreachable!()
    };
    assert!(!metadata.allow_auto_topic_creation);
    out.clear();
    request.write_denial(&mut out);
    let mut d = Decoder {
        bytes: &out[8..],
        flexible: true,
    };
    d.tagged().unwrap();
    let vals = d.structure(METADATA_RESPONSE, 13).unwrap();
    assert_eq!(
        vals.last(),
        Some(&Val::Int(i64::from(CLUSTER_AUTHORIZATION_FAILED)))
    );
    let v0_all = b"\x00\x03\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00";
    let Body::Metadata(metadata) = Request::parse(v0_all).unwrap().body else {
        unreachable!()
    };
    assert!(metadata.all_topics(0));
}

/// librdkafka (2.x) asks for all topics with a Metadata v12 body of `00 00 00 00 01 00 00`
/// after its header: a null topic array, three fields, and three bytes more. Kafka's broker
/// reads the fields and ignores the rest; so does the proxy, and reads what the broker reads.
#[test]
fn bytes_after_the_last_field_are_ignored_as_the_broker_ignores_them() {
    let librdkafka =
        b"\x00\x03\x00\x0c\x00\x00\x00\x09\x00\x07rdkafka\x00\x00\x00\x00\x00\x01\x00\x00";
    let request = Request::parse(librdkafka).unwrap();
    assert_eq!(request.header.client_id, Some(&b"rdkafka"[..]));
    assert_eq!(request.header.correlation_id, 9);
    let Body::Metadata(metadata) = request.body else {
        unreachable!()
    };
    assert!(metadata.all_topics(12));
    assert!(!metadata.allow_auto_topic_creation);
    assert_eq!(request.topics().count(), 0);
    let produce = request_frame(
        &MESSAGES[0],
        9,
        &generate(MESSAGES[0].request, 9, &mut Gen(5), 0),
        None,
        1,
    );
    let mut longer = produce.clone();
    longer.extend_from_slice(b"\xff\xff");
    let (with, without) = (
        Request::parse(&longer).unwrap(),
        Request::parse(&produce).unwrap(),
    );
    assert!(with.topics().eq(without.topics()));
}

/// A Metadata request narrowed to some of its topics is, read back by the oracle, the same
/// request with only those topic entries (an entry that names its topic carries the zero id,
/// as clients write it, and one that names it by id a null name), and, when creating topics is not allowed, auto-creation off (v4+),
/// for every version.
#[test]
fn narrowed_metadata_requests_keep_everything_else() {
    let message = MESSAGES.iter().find(|m| m.key == METADATA).unwrap();
    let mut narrowed_requests = 0;
    for version in message.low..=message.high {
        for seed in 1..40 {
            let create = seed % 2 == 0;
            let vals = generate(message.request, version, &mut Gen(seed * 7919), 0);
            let frame = request_frame(message, version, &vals, Some(b"c"), 0);
            let request = Request::parse(&frame).unwrap();
            let Body::Metadata(narrowed) = request.body else {
                unreachable!()
            };
            let Some(first) = request.topics().next() else {
                continue;
            };
            let mut out = Vec::new();
            crate::header::write_request(&mut out, &request.header, |w| {
                metadata::write_request(&narrowed, version, |topic| topic == first, create, w);
            });
            let Val::Array(Some(entries)) = &vals[0] else {
                unreachable!("a request naming a topic has topic entries")
            };
            let first = to_topic_ref(first);
            let kept = entries
                .iter()
                .filter(|entry| topic_of(METADATA_TOPIC, version, entry).as_ref() == Some(&first))
                .map(|entry| match (version >= 10, &first) {
                    (true, T::Name(_)) => [vec![Val::Uuid([0; 16])], entry[1..].to_vec()].concat(),
                    (true, T::Id(id)) => {
                        [vec![Val::Uuid(*id), Val::Str(None)], entry[2..].to_vec()].concat()
                    }
                    _ => entry.clone(),
                })
                .collect();
            let mut expected = vals.clone();
            expected[0] = Val::Array(Some(kept));
            if version >= 4 && !create {
                // AllowAutoTopicCreation, the field after the topics from v4.
                expected[1] = Val::Int(0);
            }
            assert_eq!(
                out[4..],
                request_frame(message, version, &expected, Some(b"c"), 0),
                "v{version} seed {seed}"
            );
            assert_eq!(out[..4], ((out.len() - 4) as u32).to_be_bytes());
            narrowed_requests += 1;
        }
    }
    assert!(narrowed_requests > 200, "{narrowed_requests}");
}

#[test]
fn offset_fetch_for_all_topics_is_denied_for_the_group() {
    // v8: one group "g", all topics (null), require_stable false.
    let frame = b"\x00\x09\x00\x08\x00\x00\x00\x05\x00\x00\x00\x02\x02g\x00\x00\x00\x00";
    let request = Request::parse(frame).unwrap();
    assert_eq!(request.topics().count(), 0);
    let mut out = Vec::new();
    assert_eq!(request.write_denial(&mut out), Denial::Written);
    let mut d = Decoder {
        bytes: &out[8..],
        flexible: true,
    };
    d.tagged().unwrap();
    let mut named = Named::default();
    walk(
        OFFSET_FETCH_RESPONSE,
        8,
        &d.structure(OFFSET_FETCH_RESPONSE, 8).unwrap(),
        None,
        &mut named,
    );
    assert_eq!(named.top_errors, [i64::from(GROUP_AUTHORIZATION_FAILED)]);
}

#[test]
fn denials_of_unread_apis_decode() {
    let group = i64::from(GROUP_AUTHORIZATION_FAILED);
    let cluster = i64::from(CLUSTER_AUTHORIZATION_FAILED);
    for (key, layout, high, flexible, code) in [
        (JOIN_GROUP, JOIN_GROUP_RESPONSE, 9, 6, group),
        (HEARTBEAT, HEARTBEAT_RESPONSE, 4, 4, group),
        (LEAVE_GROUP, LEAVE_GROUP_RESPONSE, 5, 4, group),
        (SYNC_GROUP, SYNC_GROUP_RESPONSE, 5, 4, group),
        (LIST_GROUPS, LIST_GROUPS_RESPONSE, 5, 3, group),
        (API_VERSIONS, API_VERSIONS_RESPONSE, 4, 3, cluster),
        (22, INIT_PRODUCER_ID_RESPONSE, 5, 2, cluster),
        (71, GET_TELEMETRY_SUBSCRIPTIONS_RESPONSE, 0, 0, cluster),
        (72, PUSH_TELEMETRY_RESPONSE, 0, 0, cluster),
    ] {
        for version in 0..=high {
            let message = Message {
                key,
                low: 0,
                high,
                flexible,
                request: &[],
                response: None,
            };
            let mut frame = request_frame(&message, version, &[], Some(b"c"), 0);
            frame.extend_from_slice(b"unread body");
            let request = Request::parse(&frame).unwrap();
            let mut out = Vec::new();
            assert_eq!(request.write_denial(&mut out), Denial::Written);
            let mut d = Decoder {
                bytes: &out[8..],
                flexible: version >= flexible,
            };
            if key != API_VERSIONS {
                d.tagged().unwrap();
            }
            let mut named = Named::default();
            walk(
                layout,
                version,
                &d.structure(layout, version).unwrap(),
                None,
                &mut named,
            );
            assert!(d.bytes.is_empty(), "{key} v{version}");
            assert_eq!(named.top_errors, [code], "{key} v{version}");
        }
    }
    let frame = request_frame(
        &Message {
            key: 37,
            low: 0,
            high: 3,
            flexible: 2,
            request: &[],
            response: None,
        },
        3,
        &[],
        None,
        0,
    );
    assert_eq!(
        Request::parse(&frame)
            .unwrap()
            .write_denial(&mut Vec::new()),
        Denial::Unsupported
    );
}

#[test]
fn find_coordinator_denials_answer_each_key() {
    // v4: key type 1 (transaction), keys "t1" and "t2".
    let frame = b"\x00\x0a\x00\x04\x00\x00\x00\x03\xff\xff\x00\x01\x03\x03t1\x03t2\x00";
    let request = Request::parse(frame).unwrap();
    let mut out = Vec::new();
    assert_eq!(request.write_denial(&mut out), Denial::Written);
    let mut d = Decoder {
        bytes: &out[8..],
        flexible: true,
    };
    d.tagged().unwrap();
    let vals = d.structure(FIND_COORDINATOR_RESPONSE, 4).unwrap();
    let Val::Array(Some(coordinators)) = &vals[1] else {
        panic!("{vals:?}")
    };
    let keys: Vec<_> = coordinators.iter().map(|c| c[0].clone()).collect();
    assert_eq!(
        keys,
        [
            Val::Str(Some(b"t1".to_vec())),
            Val::Str(Some(b"t2".to_vec()))
        ]
    );
    assert!(coordinators.iter().all(|c| c[4]
        == Val::Int(i64::from(
            find_coordinator::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        ))));
}

/// Whether the oracle's Metadata response topic entry `entry` (of `version`) answers for
/// `topic` as a request named it: by its name, or by its non-zero id.
fn answers_for(entry: &[Val], version: i16, topic: &T) -> bool {
    match topic {
        T::Name(name) => entry[1] == Val::Str(Some(name.clone())),
        T::Id(id) => version >= 10 && *id != [0; 16] && entry[2] == Val::Uuid(*id),
        T::Any => false,
    }
}

/// The oracle's Metadata response topic entry (of `version`) failing `topic` with
/// TOPIC_AUTHORIZATION_FAILED: named as the request named it, not internal, no partitions.
fn failed_entry(topic: &T, version: i16) -> Vec<Val> {
    let (name, id) = match topic {
        T::Name(name) => (Some(name.clone()), [0; 16]),
        T::Id(id) => (None, *id),
        T::Any => unreachable!("a Metadata request names no such topic"),
    };
    let mut entry = vec![Val::Int(i64::from(TOPIC_AUTHORIZATION_FAILED))];
    entry.push(Val::Str(match version >= 12 {
        true => name,
        false => Some(name.unwrap_or_default()),
    }));
    if version >= 10 {
        entry.push(Val::Uuid(id));
    }
    if version >= 1 {
        entry.push(Val::Int(0));
    }
    entry.push(Val::Array(Some(Vec::new())));
    if version >= 8 {
        entry.push(Val::Int(i64::from(i32::MIN)));
    }
    entry
}

/// The broker's Metadata response to a narrowed request, rewritten, is, decoded by the
/// oracle, the broker's response (brokers, cluster id, controller, everything else) with its
/// topics in the order of the client's request: for each topic the request kept the broker's
/// first entry for it not yet placed, for each topic left out an entry failing it with
/// TOPIC_AUTHORIZATION_FAILED, named as the request named it, not internal, without
/// partitions; the broker's entries for no kept topic are left out. For every version, with
/// unknown tagged fields where flexible, the broker answering the kept topics in an order of
/// its own among topics nobody asked about.
#[test]
fn topics_left_out_are_placed_in_request_order_among_the_brokers() {
    let message = MESSAGES.iter().find(|m| m.key == METADATA).unwrap();
    let (mut failed_topics, mut kept_topics, mut failed_first, mut unasked) = (0, 0, 0, 0);
    for version in message.low..=message.high {
        let flexible = version >= message.flexible;
        let topics_at = METADATA_RESPONSE
            .iter()
            .filter(|field| present(field, version))
            .position(|field| matches!(field.ty, Array(inner) if inner[0].role == Fail))
            .unwrap();
        for seed in 1..60u64 {
            let mut g = Gen(seed * 7919);
            let request_vals = generate(message.request, version, &mut g, 0);
            let frame = request_frame(message, version, &request_vals, Some(b"c"), 0);
            let request = Request::parse(&frame).unwrap();
            let named: Vec<(T, bool)> = request
                .topics()
                .map(|topic| (to_topic_ref(topic), g.below(2) == 0))
                .collect();
            let mut response_vals = generate(METADATA_RESPONSE, version, &mut g, 0);
            let Val::Array(Some(broker)) = &mut response_vals[topics_at] else {
                unreachable!("the topics array is never null")
            };
            for (topic, _) in named.iter().filter(|(_, kept)| *kept) {
                let mut entry = generate(METADATA_TOPIC_RESPONSE, version, &mut g, 1);
                match topic {
                    T::Name(name) => entry[1] = Val::Str(Some(name.clone())),
                    T::Id(id) => entry[2] = Val::Uuid(*id),
                    T::Any => unreachable!("a Metadata request names no such topic"),
                }
                let at = g.below(broker.len() as u64 + 1) as usize;
                broker.insert(at, entry);
            }
            let mut e = Encoder {
                out: 77i32.to_be_bytes().to_vec(),
                flexible,
                tags: (seed % 3) as u8,
            };
            e.tagged();
            e.structure(METADATA_RESPONSE, version, &response_vals);

            let mut failed = Vec::new();
            let mut spans = Vec::new();
            for (topic, kept) in request.topics().zip(named.iter().map(|(_, kept)| *kept)) {
                let start = failed.len();
                if !kept {
                    let mut w = Writer::new(&mut failed, flexible);
                    metadata::write_failed_topic(
                        topic,
                        version,
                        TOPIC_AUTHORIZATION_FAILED,
                        &mut w,
                    );
                }
                spans.push((topic, kept, start..failed.len()));
            }
            let placed = spans.iter().map(|(topic, kept, at)| match kept {
                true => metadata::Placed::Kept(*topic),
                false => metadata::Placed::Failed(&failed[at.clone()]),
            });
            let mut out = b"kept".to_vec();
            let mut buffers = metadata::RewriteBuffers::default();
            metadata::add_topics(&e.out, version, placed, &mut buffers, &mut out).unwrap();
            assert_eq!(&out[..4], b"kept");
            let out = &out[4..];
            assert_eq!(out[..4], ((out.len() - 4) as u32).to_be_bytes());
            assert_eq!(out[4..8], 77i32.to_be_bytes());
            let mut d = Decoder {
                bytes: &out[8..],
                flexible,
            };
            d.tagged().unwrap();
            let decoded = d.structure(METADATA_RESPONSE, version).unwrap();
            assert!(d.bytes.is_empty(), "v{version} seed {seed}");

            let mut expected = response_vals.clone();
            let Val::Array(Some(topics)) = &mut expected[topics_at] else {
                unreachable!("the topics array is never null")
            };
            let mut unplaced: Vec<Option<Vec<Val>>> = topics.drain(..).map(Some).collect();
            for (topic, kept) in &named {
                if !kept {
                    topics.push(failed_entry(topic, version));
                    failed_topics += 1;
                    continue;
                }
                let found = unplaced.iter_mut().find(|entry| {
                    entry
                        .as_ref()
                        .is_some_and(|entry| answers_for(entry, version, topic))
                });
                topics.push(found.and_then(Option::take).unwrap());
                kept_topics += 1;
            }
            let first_kept = named.iter().position(|(_, kept)| *kept);
            let first_failed = named.iter().position(|(_, kept)| !*kept);
            failed_first += usize::from(first_failed < first_kept && first_kept.is_some());
            unasked += unplaced.into_iter().flatten().count();
            assert_eq!(decoded, expected, "v{version} seed {seed}");
        }
    }
    assert!(
        failed_topics > 150 && kept_topics > 150 && failed_first > 50 && unasked > 150,
        "{failed_topics} {kept_topics} {failed_first} {unasked}"
    );
}

/// The oracle's encoding of a response of `message` at `version`: the correlation id, the
/// response header's tagged fields where flexible (`tags` unknown ones in every structure),
/// then the body.
fn response_frame(
    message: &Message,
    layout: &[Field],
    version: i16,
    correlation_id: i32,
    vals: &[Val],
    tags: u8,
) -> Vec<u8> {
    let mut e = Encoder {
        out: correlation_id.to_be_bytes().to_vec(),
        flexible: version >= message.flexible,
        tags,
    };
    e.tagged();
    e.structure(layout, version, vals);
    e.out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Any Metadata response, built by the oracle's encoder from the definition, teaches the
    /// names of exactly the ids of its topics without an error, with a name and a non-zero id
    /// (v10+; earlier versions carry no ids), a later entry for an id winning over an earlier.
    #[test]
    fn metadata_responses_teach_the_ids_of_their_named_topics(
        version in 0i16..=13,
        seed in any::<u64>(),
        correlation_id in any::<i32>(),
        tags in 0u8..3,
    ) {
        let message = MESSAGES.iter().find(|m| m.key == METADATA).unwrap();
        let mut g = Gen(seed | 1);
        let pool: Vec<[u8; 16]> = (0..3).map(|_| std::array::from_fn(|_| g.next() as u8)).collect();
        let mut vals = generate(METADATA_RESPONSE, version, &mut g, 0);
        let topics_at = METADATA_RESPONSE
            .iter()
            .filter(|field| present(field, version))
            .position(|field| matches!(field.ty, Array(inner) if inner[0].role == Fail))
            .unwrap();
        let Val::Array(Some(topics)) = &mut vals[topics_at] else {
            unreachable!("the topics array is never null")
        };
        for entry in topics.iter_mut() {
            if g.below(2) == 0 {
                entry[0] = Val::Int(0);
            }
            if version >= 10 && g.below(2) == 0 {
                entry[2] = Val::Uuid(match g.below(4) {
                    3 => [0; 16],
                    i => pool[i as usize],
                });
            }
        }
        let mut expected = std::collections::HashMap::new();
        let mut every_id = pool.clone();
        for entry in topics.iter() {
            let id = match (version >= 10, &entry[2]) {
                (true, Val::Uuid(id)) => *id,
                (true, _) => unreachable!("the third field of a topic from v10 is its id"),
                (false, _) => [0; 16],
            };
            every_id.push(id);
            if let (Val::Int(0), Val::Str(Some(name))) = (&entry[0], &entry[1]) {
                if version >= 10 && id != [0; 16] {
                    expected.insert(id, name.clone());
                }
            }
        }
        let response =
            response_frame(message, METADATA_RESPONSE, version, correlation_id, &vals, tags);
        let ids = crate::TopicIds::default();
        prop_assert_eq!(ids.learn(&response, version), Ok(()));
        let known = ids.known();
        for id in every_id {
            let want = match expected.get(&id) {
                Some(name) => T::Name(name.clone()),
                None => T::Id(id),
            };
            prop_assert_eq!(to_topic_ref(known.resolve(TopicRef::Id(id))), want);
        }
    }

    /// Of any Fetch response with fetch sessions (v7+), built by the oracle's encoder from the
    /// definition, the parser reads exactly its top-level error code and session id.
    #[test]
    fn fetch_responses_give_their_error_and_session(
        version in 7i16..=17,
        seed in any::<u64>(),
        correlation_id in any::<i32>(),
        error in any::<i16>(),
        session_id in any::<i32>(),
        tags in 0u8..3,
    ) {
        let message = MESSAGES.iter().find(|m| m.key == FETCH).unwrap();
        let mut vals = generate(FETCH_RESPONSE, version, &mut Gen(seed | 1), 0);
        let error_at = FETCH_RESPONSE
            .iter()
            .filter(|field| present(field, version))
            .position(|field| field.role == TopError)
            .unwrap();
        vals[error_at] = Val::Int(error.into());
        vals[error_at + 1] = Val::Int(session_id.into());
        let response =
            response_frame(message, FETCH_RESPONSE, version, correlation_id, &vals, tags);
        prop_assert_eq!(
            crate::parser::fetch_outcome(&response[4..], version),
            Some((error, session_id))
        );
    }
}
