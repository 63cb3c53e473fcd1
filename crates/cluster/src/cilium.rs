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
use crate::identity::{self, IdentitiesSnapshot};
use crate::mirror::{self, Entries};
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
        mirror::start(shared, CILIUM_IDENTITIES_PREFIX.to_owned(), identity::build).await?;
    let ip_prefix = format!("{CILIUM_IP_PREFIX}{}/", shared.config.name);
    let (mut ips, ips_task) = mirror::start(shared, ip_prefix, build_ips).await?;
    let combine =
        |identities: &IdentitiesSnapshot, ips: &(BTreeMap<IpAddr, u32>, i64)| IdentitiesSnapshot {
            revision: identities.revision.max(ips.1),
            identities: identities.identities.clone(),
            ips: ips.0.clone(),
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

/// Decodes `<ip>` → `IPIdentityPair` entries; CIDR entries (`<ip>/<bits>`) and values that do
/// not decode are left out.
fn build_ips(entries: &Entries, revision: i64) -> (BTreeMap<IpAddr, u32>, i64) {
    let ips = entries
        .iter()
        .filter_map(|(key, value)| {
            let ip = key.parse::<IpAddr>().ok()?;
            match serde_json::from_slice::<IpIdentityPair>(value) {
                Ok(pair) => Some((ip, pair.id)),
                Err(error) => {
                    tracing::warn!(ip = %ip, %error, "Cilium IP cache entry ignored");
                    None
                }
            }
        })
        .collect();
    (ips, revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_cache_entries_decode_their_identity() {
        let mut entries = Entries::new();
        entries.insert(
            "10.0.0.1".into(),
            br#"{"IP":"10.0.0.1","Mask":null,"HostIP":"192.168.0.2","ID":31337,"Key":0,"Metadata":"cilium-global:default:node-a:12","K8sNamespace":"default","K8sPodName":"luke"}"#.to_vec(),
        );
        entries.insert("10.1.0.0/16".into(), br#"{"ID":2}"#.to_vec());
        entries.insert("10.0.0.9".into(), b"{}".to_vec());
        let (ips, revision) = build_ips(&entries, 4);
        assert_eq!(revision, 4);
        assert_eq!(ips.len(), 1);
        assert_eq!(ips[&"10.0.0.1".parse::<IpAddr>().unwrap()], 31337);
    }
}
