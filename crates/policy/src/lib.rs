//! The CiliumNetworkPolicy engine of Axoneme.
//!
//! Policies are read from YAML or JSON, as written or as `kubectl get -o yaml|json` prints them
//! ([`parse_policies`], [`load_paths`]; text too long or nested too deep is refused before it is
//! parsed), into checked [`Policy`] values (with their
//! [`PolicyWarning`]s), then compiled with the endpoints, the host's addresses and the
//! registered protocols into an immutable [`Snapshot`]. The runtime asks a snapshot for a [`ConnectionVerdict`] once
//! per connection; a parsed connection then checks each request against its [`PortPolicy`].
//! This crate does no network I/O and knows no specific protocol.

mod compile;
mod endpoint;
mod error;
mod identity;
mod load;
mod model;
mod nesting;
mod peer;
mod policy;
mod ports;
mod rule;
mod selector;
mod snapshot;
mod verdict;

pub use endpoint::{EndpointInfo, EndpointSpec};
pub use error::{L7Origin, PolicyError, PolicyWarning, Subject};
pub use identity::Identity;
pub use load::{load_paths, parse_policies, DEFAULT_MAX_POLICY_BYTES};
pub use nesting::MAX_DEPTH;
pub use policy::{Policy, PolicyKind, AUDIT_ANNOTATION};
pub use snapshot::{ClusterInputs, L7Port, Snapshot};
pub use verdict::{ConnectionVerdict, PortPolicy};
