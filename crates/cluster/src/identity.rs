//! Identities shared by the cluster, allocated as Cilium's kvstore allocator does.
//!
//! A master key per number, `identities/id/<id>`, holds the encoded labels; each node that
//! uses a label set holds a reference `identities/value/<labels>/<node>` (the number as text)
//! attached to its lease. Owns allocation (race-free across nodes through etcd transactions),
//! this node's references, their restore after a fault, and the collection of numbers nobody
//! references any more once a grace period has passed. No lock is held across a request to
//! etcd: a release deletes its reference only if its mod revision is the one this node last
//! wrote, so an allocation of the same labels meanwhile keeps it. It must not know about endpoints or
//! policies.
//!
//! Why allocation is race-free: a new master key is written in one transaction with this
//! node's reference, and only if the number has no master key and the label set no
//! reference. Of two nodes racing for the same label set, or for the same number, one
//! transaction fails, and that node starts over and finds the winner's number (or picks
//! another). A master key is deleted only in a transaction that checks it is unchanged and
//! unreferenced, and a reference is only written if its master key still holds the label
//! set, so a referenced number is never reused. As with Cilium's allocator, a label set whose
//! last reference vanishes in the instant another node allocates it may get a second number;
//! the first, unreferenced, is collected after the grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::IdentitySource;
use crate::error::ClusterError;
use crate::keys::{split_labels, LabelsKey, FIRST_CLUSTER_IDENTITY, LAST_CLUSTER_IDENTITY};
use crate::mirror::{self, View};
use crate::session::{Session, Shared};

/// The cluster's identities at a revision. Its maps are shared between the snapshots that
/// hold them: a copy costs nothing, and a mirror applying a change copies only the map it
/// changes, when an older snapshot still holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentitiesSnapshot {
    /// The revision of the last change applied.
    pub revision: i64,
    /// Number → labels.
    pub identities: Arc<BTreeMap<u32, Vec<String>>>,
    /// Address → number, as Cilium's IP cache holds it (empty with Axoneme's own identities,
    /// where addresses come from the endpoints).
    pub ips: Arc<BTreeMap<std::net::IpAddr, u32>>,
}

/// A label set this node references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) id: u32,
    /// How many allocations of the label set this node has not released.
    pub(crate) count: usize,
    /// The mod revision of this node's reference as it last wrote it: its release deletes
    /// the reference only if nothing wrote it again since.
    pub(crate) revision: i64,
}

impl Session {
    /// The number of a label set, the same on every node: an existing one when the set has
    /// one, a new one otherwise. Each call must be matched by one
    /// [`release_identity`](Session::release_identity). A label set this node holds already
    /// is answered at once, without etcd; no lock is held while etcd is asked, so a slow
    /// allocation or release never delays another.
    pub async fn allocate_identity<S: AsRef<str>>(
        &self,
        labels: &[S],
    ) -> Result<u32, ClusterError> {
        let shared = self.shared();
        if shared.config.identity_source == IdentitySource::Cilium {
            return Err(ClusterError::ReadOnlyIdentities);
        }
        let labels = LabelsKey::new(labels)?;
        if let Some(held) = shared.owned().identities.get_mut(&labels) {
            held.count += 1;
            return Ok(held.id);
        }
        let mut lease = shared.lease();
        // A claim that failed while the lease was replaced (etcd lost it) is made again
        // under the new one.
        let (claimed, revision) = match claim(shared, &labels, None).await {
            Err(_) if shared.lease() != lease => {
                lease = shared.lease();
                claim(shared, &labels, None).await?
            }
            claimed => claimed?,
        };
        let mut id = {
            let mut owned = shared.owned();
            let held = owned.identities.entry(labels.clone()).or_insert(Held {
                id: claimed,
                count: 0,
                revision,
            });
            held.count += 1;
            held.id
        };
        // Recorded above before the lease is compared: a restore under a lease granted
        // after this comparison finds the label set among those it re-creates; one granted
        // while the reference was written may have missed it, so it is written again.
        while shared.lease() != lease {
            lease = shared.lease();
            let (again, revision) = claim(shared, &labels, Some(id)).await?;
            id = again;
            if let Some(held) = shared.owned().identities.get_mut(&labels) {
                held.id = again;
                held.revision = revision;
            }
        }
        Ok(id)
    }

    /// Releases one allocation of a label set; with the last, this node's reference is
    /// deleted. The number stays the label set's for the grace period. No lock is held while
    /// etcd is asked: the reference is deleted only if nothing wrote it again meanwhile (an
    /// allocation of the same labels), and a deletion that fails is tried again by the
    /// session's keepalive.
    pub async fn release_identity<S: AsRef<str>>(&self, labels: &[S]) -> Result<(), ClusterError> {
        let shared = self.shared();
        let labels = LabelsKey::new(labels)?;
        let released = {
            let mut owned = shared.owned();
            match owned.identities.get_mut(&labels) {
                Some(held) if held.count > 1 => {
                    held.count -= 1;
                    None
                }
                Some(held) => {
                    let revision = held.revision;
                    owned.identities.remove(&labels);
                    owned.released.insert(labels.clone(), revision);
                    Some(revision)
                }
                None => None,
            }
        };
        match released {
            Some(revision) => delete_reference(shared, &labels, revision).await,
            None => Ok(()),
        }
    }

    /// The label sets this node references, with their numbers.
    pub fn held_identities(&self) -> BTreeMap<LabelsKey, u32> {
        self.shared()
            .owned()
            .identities
            .iter()
            .map(|(labels, held)| (labels.clone(), held.id))
            .collect()
    }
}

/// How many rounds an allocation may lose before it gives up: one is lost to each node
/// that wins a race for the same number, or when references and master keys disagree (a
/// reference naming a number whose master key holds other labels).
const MAX_ATTEMPTS: u32 = 32;

/// The pause after a lost round, times the number of rounds lost.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// Finds or creates the number of `labels` and writes this node's reference to it.
/// `preferred` is the number to create when the set has none (the one it had before a data
/// loss), if it is free.
async fn claim(
    shared: &Shared,
    labels: &LabelsKey,
    preferred: Option<u32>,
) -> Result<(u32, i64), ClusterError> {
    let keys = &shared.keys;
    for round in 0..MAX_ATTEMPTS {
        if round > 0 {
            // Lets the winner of the last round finish before this node looks again.
            tokio::time::sleep(RETRY_PAUSE * round).await;
        }
        // Another node's reference names the number.
        let references = keys.identity_references(labels);
        let answer = shared
            .get(
                || format!("list {references}"),
                &references,
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        let referenced = answer.kvs().iter().find_map(|kv| {
            let node = crate::keys::suffix(kv.key(), &references)?;
            if node.contains('/') {
                return None;
            }
            kv.value_str().ok()?.parse::<u32>().ok()
        });
        if let Some(id) = referenced {
            if let Some(revision) = reference(shared, labels, id).await? {
                return Ok((id, revision));
            }
            continue;
        }
        // A master key holds the label set (unreferenced, within its grace period). The
        // first attempt looks in the watched identities; a repeat lists etcd afresh, since
        // the watch may lag behind what made the attempt fail.
        let masters: BTreeMap<u32, Vec<String>> = match shared.identities.get() {
            Some(watched) if round == 0 => BTreeMap::clone(&watched.borrow().identities),
            _ => {
                let (kvs, _) = shared.list(&keys.identity_ids()).await?;
                kvs.iter()
                    .filter_map(|kv| {
                        MastersView::decode(
                            crate::keys::suffix(kv.key(), &keys.identity_ids())?,
                            kv.value(),
                        )
                    })
                    .collect()
            }
        };
        let wanted = labels.labels();
        if let Some(id) = masters
            .iter()
            .find_map(|(id, labels)| (*labels == wanted).then_some(*id))
        {
            if let Some(revision) = reference(shared, labels, id).await? {
                return Ok((id, revision));
            }
            continue;
        }
        let taken: BTreeSet<u32> = masters.keys().copied().collect();
        let id = match preferred.filter(|id| !taken.contains(id)) {
            Some(id) => id,
            None => next_free(&taken)?,
        };
        let master = keys.identity_id(id);
        let txn = Txn::new()
            .when([
                Compare::create_revision(master.clone(), CompareOp::Equal, 0),
                Compare::create_revision(references.clone(), CompareOp::Equal, 0).with_prefix(),
            ])
            .and_then([
                TxnOp::put(master, labels.as_str(), None),
                TxnOp::put(
                    keys.identity_reference(labels, &shared.config.node),
                    id.to_string(),
                    Some(PutOptions::new().with_lease(shared.lease())),
                ),
            ]);
        let answer = shared.txn(|| format!("create identity {id}"), txn).await?;
        if answer.succeeded() {
            return Ok((id, answer.header().map_or(0, |h| h.revision())));
        }
    }
    Err(ClusterError::AllocationConflict {
        labels: labels.as_str().to_owned(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Writes this node's reference to `id` if its master key still holds `labels`; the
/// reference's new mod revision when it did.
async fn reference(
    shared: &Shared,
    labels: &LabelsKey,
    id: u32,
) -> Result<Option<i64>, ClusterError> {
    let keys = &shared.keys;
    let txn = Txn::new()
        .when([Compare::value(
            keys.identity_id(id),
            CompareOp::Equal,
            labels.as_str(),
        )])
        .and_then([TxnOp::put(
            keys.identity_reference(labels, &shared.config.node),
            id.to_string(),
            Some(PutOptions::new().with_lease(shared.lease())),
        )]);
    let answer = shared
        .txn(|| format!("reference identity {id}"), txn)
        .await?;
    Ok(answer
        .succeeded()
        .then(|| answer.header().map_or(0, |h| h.revision())))
}

/// Deletes this node's reference to `labels` if it still has the mod revision `revision`
/// (nothing wrote it again since it was released), and forgets the pending deletion.
async fn delete_reference(
    shared: &Shared,
    labels: &LabelsKey,
    revision: i64,
) -> Result<(), ClusterError> {
    let key = shared.keys.identity_reference(labels, &shared.config.node);
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            revision,
        )])
        .and_then([TxnOp::delete(key.clone(), None)]);
    shared
        .txn(|| format!("delete reference {key}"), txn)
        .await?;
    let mut owned = shared.owned();
    if owned.released.get(labels) == Some(&revision) {
        owned.released.remove(labels);
    }
    Ok(())
}

/// Deletes the references released whose deletion failed (etcd did not answer then).
pub(crate) async fn delete_released(shared: &Shared) -> Result<(), ClusterError> {
    let pending: Vec<(LabelsKey, i64)> = shared
        .owned()
        .released
        .iter()
        .map(|(labels, revision)| (labels.clone(), *revision))
        .collect();
    for (labels, revision) in pending {
        delete_reference(shared, &labels, revision).await?;
    }
    Ok(())
}

/// The number after the highest taken, or the lowest free one when the highest is the
/// last: released numbers are reused as late as possible.
fn next_free(taken: &BTreeSet<u32>) -> Result<u32, ClusterError> {
    let after_highest = taken
        .last()
        .map_or(FIRST_CLUSTER_IDENTITY, |highest| highest + 1);
    if after_highest <= LAST_CLUSTER_IDENTITY {
        return Ok(after_highest.max(FIRST_CLUSTER_IDENTITY));
    }
    (FIRST_CLUSTER_IDENTITY..=LAST_CLUSTER_IDENTITY)
        .find(|id| !taken.contains(id))
        .ok_or(ClusterError::IdentitiesExhausted {
            first: FIRST_CLUSTER_IDENTITY,
            last: LAST_CLUSTER_IDENTITY,
        })
}

/// Re-creates this node's references under its current lease. A master key that is gone
/// (etcd lost its data, or it was collected while this node was cut off) is created again
/// with the number it had, if that number is still free.
///
/// In few requests, as a data loss makes every node restore at once: first one transaction
/// (per 128 label sets) writes each reference whose master key still holds its labels, then
/// one creates each missing master key with its reference where the number and the label
/// set are both free. Each label set is judged by a nested transaction of its own, with the
/// same conditions as [`reference`] and [`claim`]; the few left (a number taken meanwhile) go
/// through [`claim`] one by one.
pub(crate) async fn restore(shared: &Arc<Shared>) -> Result<(), ClusterError> {
    let held: Vec<(LabelsKey, Held)> = shared
        .owned()
        .identities
        .iter()
        .map(|(labels, held)| (labels.clone(), *held))
        .collect();
    let keys = &shared.keys;
    let node = &shared.config.node;
    let reference_put = |labels: &LabelsKey, id: u32| {
        TxnOp::put(
            keys.identity_reference(labels, node),
            id.to_string(),
            Some(PutOptions::new().with_lease(shared.lease())),
        )
    };
    let bytes = |labels: &LabelsKey| 2 * labels.as_str().len() + keys.identity_ids().len() + 64;

    let references = held
        .iter()
        .map(|(labels, held)| {
            let txn = Txn::new()
                .when([Compare::value(
                    keys.identity_id(held.id),
                    CompareOp::Equal,
                    labels.as_str(),
                )])
                .and_then([reference_put(labels, held.id)]);
            (TxnOp::txn(txn), bytes(labels))
        })
        .collect();
    let answers = shared
        .write_batched("restore this node's identity references", references)
        .await?;
    let mut unreferenced = Vec::new();
    for ((labels, held), (answer, revision)) in held.into_iter().zip(answers) {
        if nested_succeeded(&answer) {
            record_restored(shared, &labels, held, held.id, revision);
        } else {
            unreferenced.push((labels, held));
        }
    }

    // Each number once per transaction: etcd refuses two writes of one key in one request.
    let mut numbers = BTreeSet::new();
    let (creatable, contended): (Vec<_>, Vec<_>) = unreferenced
        .into_iter()
        .partition(|(_, held)| numbers.insert(held.id));
    let creations = creatable
        .iter()
        .map(|(labels, held)| {
            let master = keys.identity_id(held.id);
            let txn = Txn::new()
                .when([
                    Compare::create_revision(master.clone(), CompareOp::Equal, 0),
                    Compare::create_revision(keys.identity_references(labels), CompareOp::Equal, 0)
                        .with_prefix(),
                ])
                .and_then([
                    TxnOp::put(master, labels.as_str(), None),
                    reference_put(labels, held.id),
                ]);
            (TxnOp::txn(txn), bytes(labels))
        })
        .collect();
    let answers = shared
        .write_batched("re-create this node's identities", creations)
        .await?;
    let mut left = contended;
    for ((labels, held), (answer, revision)) in creatable.into_iter().zip(answers) {
        if nested_succeeded(&answer) {
            record_restored(shared, &labels, held, held.id, revision);
        } else {
            left.push((labels, held));
        }
    }

    for (labels, held) in left {
        let (id, revision) = claim(shared, &labels, Some(held.id)).await?;
        record_restored(shared, &labels, held, id, revision);
    }
    Ok(())
}

/// Whether a nested transaction of a batch took its success branch.
fn nested_succeeded(answer: &TxnOpResponse) -> bool {
    matches!(answer, TxnOpResponse::Txn(txn) if txn.succeeded())
}

/// Notes that this node's reference to `labels` was written again, as number `id` at
/// `revision`.
fn record_restored(shared: &Shared, labels: &LabelsKey, held: Held, id: u32, revision: i64) {
    {
        let mut owned = shared.owned();
        match owned.identities.get_mut(labels) {
            Some(entry) => {
                entry.id = id;
                entry.revision = revision;
            }
            // Released while it was written again: its pending deletion targets this write.
            None => {
                owned.released.insert(labels.clone(), revision);
            }
        }
    }
    if id != held.id {
        tracing::warn!(
            labels = labels.as_str(),
            old = held.id,
            new = id,
            "identity number taken by another label set during restore; renumbered"
        );
    }
}

/// Starts watching the master keys.
pub(crate) async fn watch(
    shared: &Arc<Shared>,
) -> Result<(watch::Receiver<IdentitiesSnapshot>, JoinHandle<()>), ClusterError> {
    mirror::start::<MastersView>(shared, shared.keys.identity_ids()).await
}

/// Master keys `<id>` → encoded labels (Cilium's layout and ours alike).
pub(crate) struct MastersView;

impl View for MastersView {
    type Value = (u32, Vec<String>);
    type Snapshot = IdentitiesSnapshot;

    fn decode(id: &str, labels: &[u8]) -> Option<(u32, Vec<String>)> {
        let decoded = master_number(id).zip(std::str::from_utf8(labels).ok());
        if decoded.is_none() {
            tracing::warn!(
                key = id,
                "identity in the kvstore ignored: not <number> → labels"
            );
        }
        decoded.map(|(id, labels)| (id, split_labels(labels)))
    }

    fn update(snapshot: &mut IdentitiesSnapshot, id: &str, identity: Option<&(u32, Vec<String>)>) {
        match identity {
            Some((id, labels)) => {
                Arc::make_mut(&mut snapshot.identities).insert(*id, labels.clone());
            }
            None => {
                if let Some(id) = master_number(id) {
                    Arc::make_mut(&mut snapshot.identities).remove(&id);
                }
            }
        }
    }

    fn set_revision(snapshot: &mut IdentitiesSnapshot, revision: i64) {
        snapshot.revision = revision;
    }
}

/// The number a master key names, written as Cilium and Axoneme write it (decimal, without
/// a leading zero), so that no two keys name the same number.
fn master_number(key: &str) -> Option<u32> {
    key.parse::<u32>().ok().filter(|id| id.to_string() == key)
}

/// Deletes master keys that no node has referenced for the grace period. Every node runs
/// it; the deleting transaction checks that the key is unchanged and unreferenced, so nodes
/// collecting at once cannot delete a number that was referenced meanwhile.
pub(crate) async fn collect_garbage(shared: Arc<Shared>) {
    let grace = shared.config.identity_grace;
    let interval = (grace / 4).max(Duration::from_millis(500));
    // Master key → (its mod revision, when it was first seen unreferenced).
    let mut unreferenced: BTreeMap<u32, (i64, Instant)> = BTreeMap::new();
    loop {
        tokio::time::sleep(interval).await;
        if let Err(error) = collect_once(&shared, grace, &mut unreferenced).await {
            tracing::debug!(%error, "identity collection skipped");
        }
    }
}

async fn collect_once(
    shared: &Shared,
    grace: Duration,
    unreferenced: &mut BTreeMap<u32, (i64, Instant)>,
) -> Result<(), ClusterError> {
    let keys = &shared.keys;
    let (masters, _) = shared.list(&keys.identity_ids()).await?;
    // Listed after the masters: a reference written between the two lists is seen, and one
    // written later is caught by the deleting transaction.
    let all_references = keys.all_identity_references();
    let references = shared
        .get(
            || format!("list {all_references}"),
            &all_references,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    let referenced: BTreeSet<&str> = references
        .kvs()
        .iter()
        .filter_map(|kv| {
            let rest = crate::keys::suffix(kv.key(), &all_references)?;
            rest.rsplit_once('/').map(|(labels, _node)| labels)
        })
        .collect();
    let now = Instant::now();
    let mut seen = BTreeSet::new();
    for kv in masters {
        let Some(id) = crate::keys::suffix(kv.key(), &keys.identity_ids())
            .and_then(|id| id.parse::<u32>().ok())
        else {
            continue;
        };
        seen.insert(id);
        let labels = kv.value_str().unwrap_or_default();
        if referenced.contains(labels) {
            unreferenced.remove(&id);
            continue;
        }
        let (revision, since) = *unreferenced
            .entry(id)
            .and_modify(|entry| {
                if entry.0 != kv.mod_revision() {
                    *entry = (kv.mod_revision(), now);
                }
            })
            .or_insert((kv.mod_revision(), now));
        if now.duration_since(since) < grace {
            continue;
        }
        let references = keys.identity_references(&LabelsKey::from_stored(labels));
        let txn = Txn::new()
            .when([
                Compare::mod_revision(keys.identity_id(id), CompareOp::Equal, revision),
                Compare::create_revision(references, CompareOp::Equal, 0).with_prefix(),
            ])
            .and_then([TxnOp::delete(keys.identity_id(id), None)]);
        let answer = shared.txn(|| format!("release identity {id}"), txn).await?;
        if answer.succeeded() {
            tracing::info!(id, "identity released after its grace period");
        }
        unreferenced.remove(&id);
    }
    unreferenced.retain(|id, _| seen.contains(id));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::Entries;

    #[test]
    fn new_numbers_follow_the_highest_and_wrap_to_the_lowest_free() {
        assert_eq!(next_free(&BTreeSet::new()).unwrap(), 256);
        assert_eq!(next_free(&BTreeSet::from([256, 300])).unwrap(), 301);
        assert_eq!(next_free(&BTreeSet::from([256, 65535])).unwrap(), 257);
        let all: BTreeSet<u32> = (256..=65535).collect();
        assert!(matches!(
            next_free(&all),
            Err(ClusterError::IdentitiesExhausted { .. })
        ));
    }

    #[test]
    fn master_entries_decode_to_label_lists() {
        let labels = b"k8s:app=luke;k8s:io.kubernetes.pod.namespace=default;";
        assert!(MastersView::decode("junk", b"x;").is_none());
        let mut entries = Entries::new();
        entries.insert(
            "300".to_owned(),
            MastersView::decode("300", labels).unwrap(),
        );
        let snapshot = MastersView::build(&entries, 3);
        assert_eq!(
            snapshot.identities[&300],
            vec!["k8s:app=luke", "k8s:io.kubernetes.pod.namespace=default"]
        );
        assert_eq!(snapshot.revision, 3);
    }
}
