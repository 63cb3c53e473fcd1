//! Cluster mode of Axoneme: many nodes share identities, endpoints and policies through etcd,
//! and keep enforcing the last state they had while etcd is unavailable.
//!
//! A node opens a [`Session`] with its [`ClusterConfig`]. The session holds a lease for the
//! node, kept alive by a task; every key the node owns is attached to it, so a dead node's
//! keys vanish when the lease expires, and a node that stops ([`Session::close`]) revokes it
//! so they vanish at once. It writes a heartbeat at each renewal, and watches every node's
//! heartbeat and endpoints, the cluster's policies and its identities, each published as a
//! snapshot on a tokio `watch` channel. It
//! allocates identities as Cilium's kvstore allocator does (the same labels get the same
//! number on every node), reports whether its view is stale, and re-creates what the node
//! owns when etcd comes back without it. With `identitySource: cilium` it reads Cilium's own
//! identities and IP cache instead of allocating.
//!
//! This crate knows nothing of the proxy's runtime: the runtime feeds it the node's
//! endpoints and reads its snapshots.
//!
//! # Key layout
//!
//! Everything lives under `axoneme/<cluster>/`, so clusters can share one etcd (a key that
//! does not follow the table, written by some other tool, is ignored with a warning):
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `epoch` | a value unique to the store's life, written by the node that found it empty; another value (or none) tells a store that lost its data | none |
//! | `identities/id/<id>` (`<id>` in decimal, no leading zero) | the labels, sorted, each ending in `;` (master key) | none |
//! | `identities/value/<labels>/<node>` | `<id>` (that node's reference) | the node's |
//! | `nodes/<node>` | the node's last lease renewal, milliseconds since the Unix epoch | the node's |
//! | `endpoints/<node>/<name>` | the endpoint as JSON (the policy crate's `EndpointSpec`, named `<name>`) | the node's |
//! | `policies/<name>` | the policy text | none |
//!
//! Cilium's keys, read with `identitySource: cilium`, are `cilium/state/identities/v1/id/<id>`
//! (labels, same encoding) and `cilium/state/ip/v1/<cluster>/<ip>` (`IPIdentityPair` JSON).

#![warn(missing_docs)]

mod cilium;
mod config;
mod endpoints;
mod error;
mod identity;
mod keys;
mod mirror;
mod nodes;
mod policies;
mod session;

pub use cilium::{CILIUM_IDENTITIES_PREFIX, CILIUM_IP_PREFIX};
pub use config::{
    ClusterConfig, IdentitySource, KvstoreConfig, TlsConfig, DEFAULT_IDENTITY_GRACE,
    DEFAULT_LEASE_TTL, MAX_LEASE_TTL, MIN_LEASE_TTL,
};
pub use endpoints::EndpointsSnapshot;
pub use error::{ClusterError, ConfigError};
pub use identity::IdentitiesSnapshot;
pub use keys::{LabelsKey, FIRST_CLUSTER_IDENTITY, LAST_CLUSTER_IDENTITY};
pub use nodes::NodesSnapshot;
pub use policies::PoliciesSnapshot;
pub use session::{Health, MemberHealth, Session};
