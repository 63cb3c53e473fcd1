//! The errors of cluster mode.
//!
//! Owns the error types and what they say: which operation failed and why, so that a CLI
//! write refused while etcd has no quorum explains itself. It must not decide retries.

use thiserror::Error;

/// A field of the `cluster` configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} = {value}: {reason}")]
pub struct ConfigError {
    /// The field, e.g. `cluster.leaseTTL`.
    pub field: String,
    /// The value given (quoted when it is text).
    pub value: String,
    /// Why it cannot be used.
    pub reason: String,
}

impl ConfigError {
    /// `value` is shown as given: callers quote text with `{:?}`.
    pub(crate) fn new(field: &str, value: &str, reason: &str) -> ConfigError {
        ConfigError {
            field: field.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// What went wrong talking to the cluster.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The configuration cannot be used.
    #[error("invalid cluster configuration: {0}")]
    Config(#[from] ConfigError),
    /// A TLS file named in the configuration cannot be read.
    #[error("cannot read {field} file {path}: {source}")]
    TlsFile {
        /// `ca`, `cert` or `key`.
        field: &'static str,
        /// The path given.
        path: String,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// etcd refused or failed an operation.
    #[error("the kvstore failed to {operation}: {source}")]
    Kvstore {
        /// What was being done, e.g. `write policy "deny-all"`.
        operation: String,
        /// etcd's answer.
        source: etcd_client::Error,
    },
    /// etcd did not answer in time: it is unreachable or has lost its quorum.
    #[error("the kvstore did not answer in {timeout_ms} ms to {operation}: it is unreachable or has no quorum")]
    Unavailable {
        /// What was being done.
        operation: String,
        /// How long it was given.
        timeout_ms: u128,
    },
    /// A label cannot be part of an identity key.
    #[error("label {label:?} cannot be stored: {reason}")]
    InvalidLabel {
        /// The label as given.
        label: String,
        /// Why.
        reason: &'static str,
    },
    /// Every number of the cluster identity range is taken.
    #[error("no identity number is free in {first}..={last}")]
    IdentitiesExhausted {
        /// The first number of the range.
        first: u32,
        /// The last number of the range.
        last: u32,
    },
    /// An allocation kept losing: other nodes won every race for the numbers it chose, or
    /// etcd holds a reference to a number whose master key names other labels.
    #[error("allocating an identity for {labels:?} failed {attempts} times: other nodes keep winning, or a reference names a number held by other labels")]
    AllocationConflict {
        /// The encoded labels.
        labels: String,
        /// How many rounds were lost.
        attempts: u32,
    },
    /// Identities come from Cilium, which this node only reads.
    #[error("identities are read from Cilium (identitySource: cilium); this node does not allocate them")]
    ReadOnlyIdentities,
    /// A value this node wrote or must write cannot be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was encoded.
        what: String,
        /// Why it failed.
        source: serde_json::Error,
    },
    /// A policy name cannot be a key segment.
    #[error("policy name {name:?} cannot be stored: {reason}")]
    InvalidPolicyName {
        /// The name as given.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// This node's lease expired while its keys were being restored under it.
    #[error("this node's lease {lease:x} expired before its keys were restored under it")]
    LeaseLost {
        /// The lease's id.
        lease: i64,
    },
    /// The session was closed.
    #[error("the cluster session is closed")]
    Closed,
}
