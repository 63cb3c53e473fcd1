//! The nodes of the cluster: each writes a heartbeat under its lease when it renews the lease,
//! and every node watches all of them.
//!
//! Owns the heartbeat keys (`nodes/<node>`, the time of the node's last lease renewal in
//! milliseconds since the Unix epoch, by its clock) and the snapshot of all nodes' heartbeats.
//! A node whose lease is gone (dead, or closed) has no heartbeat key. It must not decide when
//! heartbeats are written: the session's keepalive does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ClusterError;
use crate::mirror::{self, View};
use crate::session::Shared;

/// Every node's last heartbeat at a revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodesSnapshot {
    /// The revision of the last change applied.
    pub revision: i64,
    /// Node name → when it last renewed its lease (by its own clock).
    pub heartbeats: BTreeMap<String, SystemTime>,
}

/// Writes this node's heartbeat, now, under its lease.
pub(crate) async fn beat(shared: &Shared) -> Result<(), ClusterError> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    shared
        .put_owned(shared.keys.node(&shared.config.node), millis.to_string())
        .await
}

/// Starts watching every node's heartbeat.
pub(crate) async fn watch(
    shared: &Arc<Shared>,
) -> Result<(watch::Receiver<NodesSnapshot>, JoinHandle<()>), ClusterError> {
    mirror::start::<NodesView>(shared, shared.keys.nodes()).await
}

/// Entries `<node>` → milliseconds since the Unix epoch.
struct NodesView;

impl View for NodesView {
    type Value = SystemTime;
    type Snapshot = NodesSnapshot;

    fn decode(node: &str, value: &[u8]) -> Option<SystemTime> {
        let millis = std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse::<u64>().ok());
        if millis.is_none() || node.contains('/') {
            tracing::warn!(
                key = node,
                "node heartbeat in the kvstore ignored: not <node> → milliseconds"
            );
        }
        let millis = millis.filter(|_| !node.contains('/'))?;
        Some(UNIX_EPOCH + Duration::from_millis(millis))
    }

    fn update(snapshot: &mut NodesSnapshot, node: &str, beat: Option<&SystemTime>) {
        match beat {
            Some(beat) => snapshot.heartbeats.insert(node.to_owned(), *beat),
            None => snapshot.heartbeats.remove(node),
        };
    }

    fn set_revision(snapshot: &mut NodesSnapshot, revision: i64) {
        snapshot.revision = revision;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::Entries;

    #[test]
    fn heartbeats_decode_to_times_and_bad_ones_are_left_out() {
        assert!(NodesView::decode("node-a", b"soon").is_none());
        assert!(NodesView::decode("node-a/x", b"1000").is_none());
        let beat = NodesView::decode("node-a", b"1796497445000").unwrap();
        assert_eq!(beat, UNIX_EPOCH + Duration::from_secs(1_796_497_445));
        let snapshot = NodesView::build(&Entries::from([("node-a".to_owned(), beat)]), 9);
        assert_eq!(snapshot.revision, 9);
        assert_eq!(snapshot.heartbeats["node-a"], beat);
    }
}
