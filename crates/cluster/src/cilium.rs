//! A read-only view of the identities a Cilium cluster in kvstore mode keeps in etcd, for
//! `identitySource: cilium`.
//!
//! Owns the reading of Cilium's keys: `cilium/state/identities/v1/id/<id>` holds a label
//! array encoded as `source:key=value;` items (Cilium's `GlobalIdentity.GetKey`), and
//! `cilium/state/ip/v1/<cluster>/<ip>` holds an `IPIdentityPair` as JSON, whose `ID` is the
//! identity. It must never write to Cilium's keys.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ClusterError;
use crate::identity::{IdentitiesSnapshot, MastersView};
use crate::mirror::{self, View};
use crate::session::Shared;

/// Cilium's identity master keys.
pub const CILIUM_IDENTITIES_PREFIX: &str = "cilium/state/identities/v1/id/";
/// Cilium's IP cache, followed by the cluster name.
pub const CILIUM_IP_PREFIX: &str = "cilium/state/ip/v1/";

/// The fields of Cilium's `IPIdentityPair` that Axoneme uses; the others are ignored.
#[derive(Debug, Deserialize)]
struct IpIdentityPair {
    #[serde(rename = "ID")]
    id: u32,
}

/// Starts watching Cilium's identities and the IP cache of the cluster named in the
/// configuration, published together.
pub(crate) async fn watch(
    shared: &Arc<Shared>,
) -> Result<(watch::Receiver<IdentitiesSnapshot>, Vec<JoinHandle<()>>), ClusterError> {
    let (mut identities, identities_task) =
        mirror::start::<MastersView>(shared, CILIUM_IDENTITIES_PREFIX.to_owned()).await?;
    let ip_prefix = format!("{CILIUM_IP_PREFIX}{}/", shared.config.name);
    let (mut ips, ips_task) = mirror::start::<IpCacheView>(shared, ip_prefix).await?;
    // Both maps are shared with the mirrors, not copied: the mirror of the one that changes
    // next copies it then, the other stays shared.
    let combine = |identities: &IdentitiesSnapshot, ips: &IpCache| IdentitiesSnapshot {
        revision: identities.revision.max(ips.1),
        identities: Arc::clone(&identities.identities),
        ips: Arc::clone(&ips.0),
    };
    let (tx, rx) = watch::channel(combine(
        &identities.borrow_and_update(),
        &ips.borrow_and_update(),
    ));
    let combiner = tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = identities.changed() => if changed.is_err() { return },
                changed = ips.changed() => if changed.is_err() { return },
            }
            tx.send_replace(combine(
                &identities.borrow_and_update(),
                &ips.borrow_and_update(),
            ));
        }
    });
    Ok((rx, vec![identities_task, ips_task, combiner]))
}

/// The address of an IP cache key, written as Cilium writes it (Go's `net.IP.String()`, the
/// same text as Rust's), so that no two keys name the same address.
fn cache_address(key: &str) -> Option<IpAddr> {
    key.parse::<IpAddr>()
        .ok()
        .filter(|ip| ip.to_string() == key)
}

/// The IP cache's addresses and numbers, and the revision it stands at.
type IpCache = (Arc<BTreeMap<IpAddr, u32>>, i64);

/// Cilium's IP cache: `<ip>` → `IPIdentityPair`. CIDR entries (`<ip>/<bits>`) and values that
/// do not decode are left out.
struct IpCacheView;

impl View for IpCacheView {
    type Value = (IpAddr, u32);
    type Snapshot = IpCache;

    fn decode(key: &str, value: &[u8]) -> Option<(IpAddr, u32)> {
        let ip = cache_address(key)?;
        match serde_json::from_slice::<IpIdentityPair>(value) {
            Ok(pair) => Some((ip, pair.id)),
            Err(error) => {
                tracing::warn!(ip = %ip, %error, "Cilium IP cache entry ignored");
                None
            }
        }
    }

    fn update(snapshot: &mut IpCache, key: &str, pair: Option<&(IpAddr, u32)>) {
        match pair {
            Some((ip, id)) => {
                Arc::make_mut(&mut snapshot.0).insert(*ip, *id);
            }
            None => {
                if let Some(ip) = cache_address(key) {
                    Arc::make_mut(&mut snapshot.0).remove(&ip);
                }
            }
        }
    }

    fn set_revision(snapshot: &mut IpCache, revision: i64) {
        snapshot.1 = revision;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::Entries;

    #[test]
    fn ip_cache_entries_decode_their_identity() {
        let pair = br#"{"IP":"10.0.0.1","Mask":null,"HostIP":"192.168.0.2","ID":31337,"Key":0,"Metadata":"cilium-global:default:node-a:12","K8sNamespace":"default","K8sPodName":"luke"}"#;
        let luke = IpCacheView::decode("10.0.0.1", pair).unwrap();
        assert_eq!(luke, ("10.0.0.1".parse::<IpAddr>().unwrap(), 31337));
        assert!(IpCacheView::decode("10.1.0.0/16", br#"{"ID":2}"#).is_none());
        assert!(IpCacheView::decode("10.0.0.9", b"{}").is_none());
        let entries = Entries::from([("10.0.0.1".to_owned(), luke)]);
        let (ips, revision) = IpCacheView::build(&entries, 4);
        assert_eq!((ips.len(), revision), (1, 4));
    }
}
