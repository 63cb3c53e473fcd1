//! The policy in force: an immutable compiled snapshot, swapped atomically when policy changes.
//!
//! Connections read the current snapshot without locks; a change builds a new snapshot from
//! scratch and either swaps it in whole or leaves the old one in force with the error. This
//! module does not watch files or serve an API; it is told what to load.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axoneme_policy::{load_paths, EndpointSpec, PolicyError, Snapshot};
use axoneme_sdk::Registry;

/// What a snapshot is built from.
#[derive(Debug, Clone, Default)]
pub struct PolicySources {
    /// Policy files and directories.
    pub paths: Vec<PathBuf>,
    /// Endpoints, whose labels give identities.
    pub endpoints: Vec<EndpointSpec>,
    /// Addresses of the host.
    pub host_ips: Vec<IpAddr>,
}

/// The shared policy state of a running proxy.
pub struct PolicyState {
    registry: Registry,
    current: ArcSwap<Snapshot>,
    /// Mirror of `current`'s revision, for a cheap per-request "has policy changed?" check.
    revision: AtomicU64,
}

impl PolicyState {
    /// Builds the first snapshot; an error here means the proxy cannot start.
    pub fn new(registry: Registry, sources: &PolicySources) -> Result<PolicyState, PolicyError> {
        let snapshot = build(&registry, sources, None)?;
        let revision = AtomicU64::new(snapshot.revision());
        Ok(PolicyState {
            registry,
            current: ArcSwap::from_pointee(snapshot),
            revision,
        })
    }

    /// Rebuilds from `sources` and swaps the result in. On error the snapshot in force stays.
    pub fn reload(&self, sources: &PolicySources) -> Result<u64, PolicyError> {
        let previous = self.current.load_full();
        let snapshot = build(&self.registry, sources, Some(&previous))?;
        let revision = snapshot.revision();
        self.current.store(Arc::new(snapshot));
        self.revision.store(revision, Ordering::Release);
        Ok(revision)
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The revision of the snapshot in force.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// The protocols known to this proxy.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

fn build(
    registry: &Registry,
    sources: &PolicySources,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, PolicyError> {
    let policies = load_paths(&sources.paths)?;
    Snapshot::build(
        policies,
        &sources.endpoints,
        &sources.host_ips,
        registry,
        previous,
    )
}
