//! Kafka's API keys: each key's Kafka name, the name policies write, the versions a broker
//! accepts and the first flexible version.
//!
//! The versions are the `validVersions` and `flexibleVersions` of Apache Kafka's message
//! definitions (`clients/src/main/resources/common/message/*Request.json`): those of Kafka
//! 4.3.0 for the APIs whose bodies this crate reads (Produce 3-13, Fetch 4-18, ListOffsets
//! 1-11, Metadata 0-13, OffsetCommit 2-10, OffsetFetch 1-10, CreateTopics 2-7, DeleteTopics
//! 1-6, DeleteRecords 0-2, OffsetForLeaderEpoch 2-4, AddPartitionsToTxn 0-5, TxnOffsetCommit
//! 0-5), those of Kafka 4.1 for the others. Brokers advertise Produce from version 0 in their
//! ApiVersions responses (KAFKA-18659, for librdkafka) but refuse versions 0 to 2, removed in
//! Kafka 4.0 as Fetch 0 to 3 were: the table holds what they accept. A request of a version
//! outside the table closes the connection with a logged error when its body is read, its
//! version is negative or its key removed; any other is judged by its header as at any version
//! (its body is never read), and, denied, closes the connection when this crate has no denial
//! of that version. Only the first flexible version matters for the others (their bodies are
//! not read), and flexible versions are open-ended, so a later version's header still reads.
//! Policy names are Cilium's (`pkg/policy/api/kafka`,
//! `APIKeyMap`) for the keys 0 to 33 it named, among them `offsets` for ListOffsets; every
//! other key is Kafka's name lower-cased without separators. Keys 4 to 7 were removed with
//! ZooKeeper in Kafka 4.0: policies may still name them (Cilium's policies do), but no version
//! of them is read. This module only describes keys; reading messages belongs to the message
//! modules.

/// One API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Api {
    /// The key on the wire.
    pub key: i16,
    /// Kafka's name (`ListOffsets`).
    pub name: &'static str,
    /// The name policies use in `apiKey` (`offsets`).
    pub policy_name: &'static str,
    /// The lowest and highest version a broker accepts; `None` for a removed key.
    pub versions: Option<(i16, i16)>,
    /// The first flexible version (flexible versions are open-ended); `None` when no version
    /// is flexible.
    pub flexible_from: Option<i16>,
}

impl Api {
    /// Whether a broker accepts `version` of this API (see the module documentation).
    pub fn accepts(&self, version: i16) -> bool {
        self.versions
            .is_some_and(|(low, high)| (low..=high).contains(&version))
    }

    /// Whether `version` is flexible: request header v2, response header v1 (but for
    /// ApiVersions, whose response header stays v0 so that any client can read it), compact
    /// strings and arrays, tagged fields.
    pub fn is_flexible(&self, version: i16) -> bool {
        self.flexible_from.is_some_and(|from| version >= from)
    }

    /// The API with this key, if Kafka defines one.
    pub fn by_key(key: i16) -> Option<&'static Api> {
        usize::try_from(key).ok().and_then(|i| APIS.get(i))
    }

    /// The API policies call `name`, compared without regard to case as Cilium did.
    pub fn by_policy_name(name: &str) -> Option<&'static Api> {
        APIS.iter()
            .find(|api| api.policy_name.eq_ignore_ascii_case(name))
    }

    /// Every API key, by key.
    pub fn all() -> &'static [Api] {
        APIS
    }
}

/// Produce.
pub const PRODUCE: i16 = 0;
/// Fetch.
pub const FETCH: i16 = 1;
/// ListOffsets (Cilium: `offsets`).
pub const LIST_OFFSETS: i16 = 2;
/// Metadata.
pub const METADATA: i16 = 3;
/// OffsetCommit.
pub const OFFSET_COMMIT: i16 = 8;
/// OffsetFetch.
pub const OFFSET_FETCH: i16 = 9;
/// FindCoordinator.
pub const FIND_COORDINATOR: i16 = 10;
/// JoinGroup.
pub const JOIN_GROUP: i16 = 11;
/// Heartbeat.
pub const HEARTBEAT: i16 = 12;
/// LeaveGroup.
pub const LEAVE_GROUP: i16 = 13;
/// SyncGroup.
pub const SYNC_GROUP: i16 = 14;
/// ListGroups.
pub const LIST_GROUPS: i16 = 16;
/// SaslHandshake.
pub const SASL_HANDSHAKE: i16 = 17;
/// ApiVersions.
pub const API_VERSIONS: i16 = 18;
/// CreateTopics.
pub const CREATE_TOPICS: i16 = 19;
/// DeleteTopics.
pub const DELETE_TOPICS: i16 = 20;
/// DeleteRecords.
pub const DELETE_RECORDS: i16 = 21;
/// OffsetForLeaderEpoch.
pub const OFFSET_FOR_LEADER_EPOCH: i16 = 23;
/// AddPartitionsToTxn.
pub const ADD_PARTITIONS_TO_TXN: i16 = 24;
/// TxnOffsetCommit.
pub const TXN_OFFSET_COMMIT: i16 = 28;
/// DescribeAcls.
pub const DESCRIBE_ACLS: i16 = 29;
/// CreateAcls.
pub const CREATE_ACLS: i16 = 30;
/// DeleteAcls.
pub const DELETE_ACLS: i16 = 31;
/// DescribeConfigs.
pub const DESCRIBE_CONFIGS: i16 = 32;
/// AlterConfigs.
pub const ALTER_CONFIGS: i16 = 33;
/// IncrementalAlterConfigs.
pub const INCREMENTAL_ALTER_CONFIGS: i16 = 44;
/// InitProducerId.
pub const INIT_PRODUCER_ID: i16 = 22;
/// SaslAuthenticate.
pub const SASL_AUTHENTICATE: i16 = 36;
/// GetTelemetrySubscriptions.
pub const GET_TELEMETRY_SUBSCRIPTIONS: i16 = 71;
/// PushTelemetry.
pub const PUSH_TELEMETRY: i16 = 72;

const fn api(
    key: i16,
    name: &'static str,
    policy_name: &'static str,
    versions: Option<(i16, i16)>,
    flexible_from: Option<i16>,
) -> Api {
    Api {
        key,
        name,
        policy_name,
        versions,
        flexible_from,
    }
}

/// Every API key, indexed by key.
static APIS: &[Api] = &[
    api(0, "Produce", "produce", Some((3, 13)), Some(9)),
    api(1, "Fetch", "fetch", Some((4, 18)), Some(12)),
    api(2, "ListOffsets", "offsets", Some((1, 11)), Some(6)),
    api(3, "Metadata", "metadata", Some((0, 13)), Some(9)),
    api(4, "LeaderAndIsr", "leaderandisr", None, None),
    api(5, "StopReplica", "stopreplica", None, None),
    api(6, "UpdateMetadata", "updatemetadata", None, None),
    api(7, "ControlledShutdown", "controlledshutdown", None, None),
    api(8, "OffsetCommit", "offsetcommit", Some((2, 10)), Some(8)),
    api(9, "OffsetFetch", "offsetfetch", Some((1, 10)), Some(6)),
    api(
        10,
        "FindCoordinator",
        "findcoordinator",
        Some((0, 6)),
        Some(3),
    ),
    api(11, "JoinGroup", "joingroup", Some((0, 9)), Some(6)),
    api(12, "Heartbeat", "heartbeat", Some((0, 4)), Some(4)),
    api(13, "LeaveGroup", "leavegroup", Some((0, 5)), Some(4)),
    api(14, "SyncGroup", "syncgroup", Some((0, 5)), Some(4)),
    api(
        15,
        "DescribeGroups",
        "describegroups",
        Some((0, 6)),
        Some(5),
    ),
    api(16, "ListGroups", "listgroups", Some((0, 5)), Some(3)),
    api(17, "SaslHandshake", "saslhandshake", Some((0, 1)), None),
    api(18, "ApiVersions", "apiversions", Some((0, 4)), Some(3)),
    api(19, "CreateTopics", "createtopics", Some((2, 7)), Some(5)),
    api(20, "DeleteTopics", "deletetopics", Some((1, 6)), Some(4)),
    api(21, "DeleteRecords", "deleterecords", Some((0, 2)), Some(2)),
    api(
        22,
        "InitProducerId",
        "initproducerid",
        Some((0, 6)),
        Some(2),
    ),
    api(
        23,
        "OffsetForLeaderEpoch",
        "offsetforleaderepoch",
        Some((2, 4)),
        Some(4),
    ),
    api(
        24,
        "AddPartitionsToTxn",
        "addpartitionstotxn",
        Some((0, 5)),
        Some(3),
    ),
    api(
        25,
        "AddOffsetsToTxn",
        "addoffsetstotxn",
        Some((0, 4)),
        Some(3),
    ),
    api(26, "EndTxn", "endtxn", Some((0, 5)), Some(3)),
    api(
        27,
        "WriteTxnMarkers",
        "writetxnmarkers",
        Some((1, 1)),
        Some(1),
    ),
    api(
        28,
        "TxnOffsetCommit",
        "txnoffsetcommit",
        Some((0, 5)),
        Some(3),
    ),
    api(29, "DescribeAcls", "describeacls", Some((1, 3)), Some(2)),
    api(30, "CreateAcls", "createacls", Some((1, 3)), Some(2)),
    api(31, "DeleteAcls", "deleteacls", Some((1, 3)), Some(2)),
    api(
        32,
        "DescribeConfigs",
        "describeconfigs",
        Some((1, 4)),
        Some(4),
    ),
    api(33, "AlterConfigs", "alterconfigs", Some((0, 2)), Some(2)),
    api(
        34,
        "AlterReplicaLogDirs",
        "alterreplicalogdirs",
        Some((1, 2)),
        Some(2),
    ),
    api(
        35,
        "DescribeLogDirs",
        "describelogdirs",
        Some((1, 4)),
        Some(2),
    ),
    api(
        36,
        "SaslAuthenticate",
        "saslauthenticate",
        Some((0, 2)),
        Some(2),
    ),
    api(
        37,
        "CreatePartitions",
        "createpartitions",
        Some((0, 3)),
        Some(2),
    ),
    api(
        38,
        "CreateDelegationToken",
        "createdelegationtoken",
        Some((1, 3)),
        Some(2),
    ),
    api(
        39,
        "RenewDelegationToken",
        "renewdelegationtoken",
        Some((1, 2)),
        Some(2),
    ),
    api(
        40,
        "ExpireDelegationToken",
        "expiredelegationtoken",
        Some((1, 2)),
        Some(2),
    ),
    api(
        41,
        "DescribeDelegationToken",
        "describedelegationtoken",
        Some((1, 3)),
        Some(2),
    ),
    api(42, "DeleteGroups", "deletegroups", Some((0, 2)), Some(2)),
    api(43, "ElectLeaders", "electleaders", Some((0, 2)), Some(2)),
    api(
        44,
        "IncrementalAlterConfigs",
        "incrementalalterconfigs",
        Some((0, 1)),
        Some(1),
    ),
    api(
        45,
        "AlterPartitionReassignments",
        "alterpartitionreassignments",
        Some((0, 1)),
        Some(0),
    ),
    api(
        46,
        "ListPartitionReassignments",
        "listpartitionreassignments",
        Some((0, 0)),
        Some(0),
    ),
    api(47, "OffsetDelete", "offsetdelete", Some((0, 0)), None),
    api(
        48,
        "DescribeClientQuotas",
        "describeclientquotas",
        Some((0, 1)),
        Some(1),
    ),
    api(
        49,
        "AlterClientQuotas",
        "alterclientquotas",
        Some((0, 1)),
        Some(1),
    ),
    api(
        50,
        "DescribeUserScramCredentials",
        "describeuserscramcredentials",
        Some((0, 0)),
        Some(0),
    ),
    api(
        51,
        "AlterUserScramCredentials",
        "alteruserscramcredentials",
        Some((0, 0)),
        Some(0),
    ),
    api(52, "Vote", "vote", Some((0, 2)), Some(0)),
    api(
        53,
        "BeginQuorumEpoch",
        "beginquorumepoch",
        Some((0, 1)),
        Some(1),
    ),
    api(
        54,
        "EndQuorumEpoch",
        "endquorumepoch",
        Some((0, 1)),
        Some(1),
    ),
    api(
        55,
        "DescribeQuorum",
        "describequorum",
        Some((0, 2)),
        Some(0),
    ),
    api(
        56,
        "AlterPartition",
        "alterpartition",
        Some((2, 3)),
        Some(0),
    ),
    api(
        57,
        "UpdateFeatures",
        "updatefeatures",
        Some((0, 1)),
        Some(0),
    ),
    api(58, "Envelope", "envelope", Some((0, 0)), Some(0)),
    api(59, "FetchSnapshot", "fetchsnapshot", Some((0, 1)), Some(0)),
    api(
        60,
        "DescribeCluster",
        "describecluster",
        Some((0, 2)),
        Some(0),
    ),
    api(
        61,
        "DescribeProducers",
        "describeproducers",
        Some((0, 0)),
        Some(0),
    ),
    api(
        62,
        "BrokerRegistration",
        "brokerregistration",
        Some((0, 4)),
        Some(0),
    ),
    api(
        63,
        "BrokerHeartbeat",
        "brokerheartbeat",
        Some((0, 1)),
        Some(0),
    ),
    api(
        64,
        "UnregisterBroker",
        "unregisterbroker",
        Some((0, 0)),
        Some(0),
    ),
    api(
        65,
        "DescribeTransactions",
        "describetransactions",
        Some((0, 0)),
        Some(0),
    ),
    api(
        66,
        "ListTransactions",
        "listtransactions",
        Some((0, 2)),
        Some(0),
    ),
    api(
        67,
        "AllocateProducerIds",
        "allocateproducerids",
        Some((0, 0)),
        Some(0),
    ),
    api(
        68,
        "ConsumerGroupHeartbeat",
        "consumergroupheartbeat",
        Some((0, 1)),
        Some(0),
    ),
    api(
        69,
        "ConsumerGroupDescribe",
        "consumergroupdescribe",
        Some((0, 1)),
        Some(0),
    ),
    api(
        70,
        "ControllerRegistration",
        "controllerregistration",
        Some((0, 0)),
        Some(0),
    ),
    api(
        71,
        "GetTelemetrySubscriptions",
        "gettelemetrysubscriptions",
        Some((0, 0)),
        Some(0),
    ),
    api(72, "PushTelemetry", "pushtelemetry", Some((0, 0)), Some(0)),
    api(
        73,
        "AssignReplicasToDirs",
        "assignreplicastodirs",
        Some((0, 0)),
        Some(0),
    ),
    api(
        74,
        "ListConfigResources",
        "listconfigresources",
        Some((0, 1)),
        Some(0),
    ),
    api(
        75,
        "DescribeTopicPartitions",
        "describetopicpartitions",
        Some((0, 0)),
        Some(0),
    ),
    api(
        76,
        "ShareGroupHeartbeat",
        "sharegroupheartbeat",
        Some((1, 1)),
        Some(0),
    ),
    api(
        77,
        "ShareGroupDescribe",
        "sharegroupdescribe",
        Some((1, 1)),
        Some(0),
    ),
    api(78, "ShareFetch", "sharefetch", Some((1, 1)), Some(0)),
    api(
        79,
        "ShareAcknowledge",
        "shareacknowledge",
        Some((1, 1)),
        Some(0),
    ),
    api(80, "AddRaftVoter", "addraftvoter", Some((0, 0)), Some(0)),
    api(
        81,
        "RemoveRaftVoter",
        "removeraftvoter",
        Some((0, 0)),
        Some(0),
    ),
    api(
        82,
        "UpdateRaftVoter",
        "updateraftvoter",
        Some((0, 0)),
        Some(0),
    ),
    api(
        83,
        "InitializeShareGroupState",
        "initializesharegroupstate",
        Some((0, 0)),
        Some(0),
    ),
    api(
        84,
        "ReadShareGroupState",
        "readsharegroupstate",
        Some((0, 0)),
        Some(0),
    ),
    api(
        85,
        "WriteShareGroupState",
        "writesharegroupstate",
        Some((0, 0)),
        Some(0),
    ),
    api(
        86,
        "DeleteShareGroupState",
        "deletesharegroupstate",
        Some((0, 0)),
        Some(0),
    ),
    api(
        87,
        "ReadShareGroupStateSummary",
        "readsharegroupstatesummary",
        Some((0, 0)),
        Some(0),
    ),
    api(
        88,
        "StreamsGroupHeartbeat",
        "streamsgroupheartbeat",
        Some((0, 0)),
        Some(0),
    ),
    api(
        89,
        "StreamsGroupDescribe",
        "streamsgroupdescribe",
        Some((0, 0)),
        Some(0),
    ),
    api(
        90,
        "DescribeShareGroupOffsets",
        "describesharegroupoffsets",
        Some((0, 0)),
        Some(0),
    ),
    api(
        91,
        "AlterShareGroupOffsets",
        "altersharegroupoffsets",
        Some((0, 0)),
        Some(0),
    ),
    api(
        92,
        "DeleteShareGroupOffsets",
        "deletesharegroupoffsets",
        Some((0, 0)),
        Some(0),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_key_and_names_are_unique() {
        for (i, api) in Api::all().iter().enumerate() {
            assert_eq!(api.key as usize, i, "{}", api.name);
            assert_eq!(Api::by_policy_name(api.policy_name), Some(api));
            assert!(api.policy_name.bytes().all(|b| b.is_ascii_lowercase()));
            if let (Some((low, high)), Some(from)) = (api.versions, api.flexible_from) {
                assert!(low <= high && from <= high.max(from), "{}", api.name);
            }
        }
    }

    #[test]
    fn cilium_names_keep_their_keys() {
        let cilium = [
            ("produce", 0),
            ("fetch", 1),
            ("offsets", 2),
            ("metadata", 3),
            ("leaderandisr", 4),
            ("stopreplica", 5),
            ("updatemetadata", 6),
            ("controlledshutdown", 7),
            ("offsetcommit", 8),
            ("offsetfetch", 9),
            ("findcoordinator", 10),
            ("joingroup", 11),
            ("heartbeat", 12),
            ("leavegroup", 13),
            ("syncgroup", 14),
            ("describegroups", 15),
            ("listgroups", 16),
            ("saslhandshake", 17),
            ("apiversions", 18),
            ("createtopics", 19),
            ("deletetopics", 20),
            ("deleterecords", 21),
            ("initproducerid", 22),
            ("offsetforleaderepoch", 23),
            ("addpartitionstotxn", 24),
            ("addoffsetstotxn", 25),
            ("endtxn", 26),
            ("writetxnmarkers", 27),
            ("txnoffsetcommit", 28),
            ("describeacls", 29),
            ("createacls", 30),
            ("deleteacls", 31),
            ("describeconfigs", 32),
            ("alterconfigs", 33),
        ];
        for (name, key) in cilium {
            assert_eq!(
                Api::by_policy_name(name).map(|api| api.key),
                Some(key),
                "{name}"
            );
        }
        assert_eq!(Api::by_policy_name("ApiVersions").map(|a| a.key), Some(18));
        assert_eq!(
            Api::by_policy_name("pushtelemetry").map(|a| a.key),
            Some(72)
        );
        assert_eq!(Api::by_policy_name("listoffsets"), None);
    }

    #[test]
    fn versions_and_flexibility() {
        let produce = Api::by_key(PRODUCE).unwrap();
        assert!(!produce.accepts(2) && produce.accepts(3) && produce.accepts(13));
        assert!(!produce.is_flexible(8) && produce.is_flexible(9) && produce.is_flexible(14));
        let handshake = Api::by_key(17).unwrap();
        assert!(!handshake.is_flexible(1));
        assert!(!Api::by_key(4).unwrap().accepts(0));
        assert_eq!(Api::by_key(-1), None);
        assert_eq!(Api::by_key(93), None);
    }
}
