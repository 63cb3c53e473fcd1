//! A local mirror of one key prefix: listed once, then kept current by a watch that resumes
//! from the last revision it applied, relisting only when that revision was compacted or the
//! store lost its data.
//!
//! Owns the key → value map of the prefix and when to publish it. Each value is decoded once,
//! when it arrives, by the caller's [`View`], which also says how one entry changes the
//! published snapshot: the events of a watch answer are applied to the snapshot in place, one
//! key at a time, so following a prefix costs the same per change however many keys it holds
//! (a listing builds the snapshot whole). After a data loss the entries missing from the relist are held for two lease times, so
//! that their owners can re-create them without the snapshot ever losing them in between. It
//! must not know what the values mean.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::ClusterError;
use crate::session::Shared;

/// The longest pause between two attempts to reach etcd again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The first pause after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long a watch must have worked for its end to be resumed at once, with no pause: a
/// member that went away takes its watches with it, and their changes must not wait.
const STEADY: Duration = Duration::from_secs(1);

/// The keys of a prefix (relative to it) and their decoded values.
pub(crate) type Entries<V> = BTreeMap<String, V>;

/// What a mirror's values mean: how one is decoded and how it changes the snapshot.
pub(crate) trait View: Send + Sync + 'static {
    /// One decoded value.
    type Value: Clone + Send + Sync + 'static;
    /// The snapshot published; the default is the snapshot of no entries.
    type Snapshot: Default + Send + Sync + 'static;
    /// Decodes the value of a key (relative to the prefix); `None` leaves the key out (and
    /// says why in the log), so one bad writer cannot blank the view. Two keys decoded must
    /// never stand for the same entry of the snapshot (a key is refused unless it is written
    /// the one way its entry's key is), so that [`View::update`] of one never touches another.
    fn decode(key: &str, value: &[u8]) -> Option<Self::Value>;
    /// Sets the snapshot's entry for `key` to `value`, or removes it with `None`.
    fn update(snapshot: &mut Self::Snapshot, key: &str, value: Option<&Self::Value>);
    /// Sets the revision the snapshot stands at.
    fn set_revision(snapshot: &mut Self::Snapshot, revision: i64);
    /// Assembles the snapshot of all entries.
    fn build(entries: &Entries<Self::Value>, revision: i64) -> Self::Snapshot {
        let mut snapshot = Self::Snapshot::default();
        for (key, value) in entries {
            Self::update(&mut snapshot, key, Some(value));
        }
        Self::set_revision(&mut snapshot, revision);
        snapshot
    }
}

/// Lists `prefix` and starts the task that keeps the published snapshot current.
pub(crate) async fn start<V: View>(
    shared: &Arc<Shared>,
    prefix: String,
) -> Result<(watch::Receiver<V::Snapshot>, JoinHandle<()>), ClusterError> {
    let (kvs, revision) = shared.list(&prefix).await?;
    let mut mirror = Mirror::<V> {
        shared: shared.clone(),
        entries: Entries::new(),
        held: Entries::new(),
        hold_until: None,
        revision,
        prefix,
    };
    mirror.replace(kvs, revision, false);
    let (tx, rx) = watch::channel(V::build(&mirror.view(), revision));
    shared.applied(revision);
    let task = tokio::spawn(mirror.run(tx));
    Ok((rx, task))
}

struct Mirror<V: View> {
    shared: Arc<Shared>,
    prefix: String,
    /// What etcd holds, as far as this mirror has seen.
    entries: Entries<V::Value>,
    /// Entries a relist after a data loss did not find, kept until `hold_until`.
    held: Entries<V::Value>,
    hold_until: Option<Instant>,
    /// The revision up to which every change has been applied.
    revision: i64,
}

/// Why a watch ended.
enum Ended {
    /// The stream broke or was cancelled: resume from the last revision, at once if it had
    /// been working for [`STEADY`] (`steady`).
    Resume { steady: bool },
    /// The revision to resume from was compacted: list again.
    Compacted,
    /// The store lost its data: list again, holding what is missing.
    DataLost,
}

impl<V: View> Mirror<V> {
    /// The published view: etcd's entries, plus those held after a data loss.
    fn view(&self) -> Entries<V::Value> {
        if self.held.is_empty() {
            return self.entries.clone();
        }
        let mut view = self.held.clone();
        view.extend(self.entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        view
    }

    /// Takes a fresh listing; with `hold`, entries it lacks are held for two lease times.
    fn replace(&mut self, kvs: Vec<etcd_client::KeyValue>, revision: i64, hold: bool) {
        let mut fresh = Entries::new();
        for kv in kvs {
            let Some(key) = crate::keys::suffix(kv.key(), &self.prefix) else {
                continue;
            };
            if let Some(value) = V::decode(key, kv.value()) {
                fresh.insert(key.to_owned(), value);
            }
        }
        if hold {
            let old = std::mem::take(&mut self.entries);
            self.held
                .extend(old.into_iter().filter(|(k, _)| !fresh.contains_key(k)));
            self.hold_until = Some(Instant::now() + self.shared.config.lease_ttl * 2);
        }
        self.entries = fresh;
        self.revision = revision;
    }

    /// Follows the prefix for the session's life: resumes after a broken stream, relists
    /// after a compaction or a data loss, and waits longer between failed attempts.
    async fn run(mut self, tx: watch::Sender<V::Snapshot>) {
        let mut losses = self.shared.losses.subscribe();
        losses.mark_unchanged();
        let mut backoff = FIRST_BACKOFF;
        let mut relist: Option<bool> = None;
        loop {
            if let Some(hold) = relist {
                match self.shared.list(&self.prefix).await {
                    Ok((kvs, revision)) => {
                        self.replace(kvs, revision, hold);
                        tx.send_replace(V::build(&self.view(), self.revision));
                        self.shared.applied(revision);
                        relist = None;
                    }
                    Err(error) => {
                        tracing::debug!(prefix = %self.prefix, %error, "relist failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(self.revision + 1);
            let prefix = self.prefix.clone();
            let stream = match self
                .shared
                .call(
                    || format!("watch {prefix}"),
                    |mut client| {
                        let (prefix, options) = (prefix.clone(), options.clone());
                        async move { client.watch(prefix, Some(options)).await }
                    },
                )
                .await
            {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(prefix = %self.prefix, %error, "watch failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            match self.follow(stream, &tx, &mut losses).await {
                Ended::Resume { steady: true } => backoff = FIRST_BACKOFF,
                Ended::Resume { steady: false } => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Ended::Compacted => relist = Some(false),
                Ended::DataLost => relist = Some(true),
            }
        }
    }

    /// Applies the events of one watch stream until it ends.
    async fn follow(
        &mut self,
        mut stream: WatchStream,
        tx: &watch::Sender<V::Snapshot>,
        losses: &mut watch::Receiver<u64>,
    ) -> Ended {
        let mut created_at: Option<Instant> = None;
        let resume = |created_at: Option<Instant>| Ended::Resume {
            steady: created_at.is_some_and(|at| at.elapsed() >= STEADY),
        };
        loop {
            let hold_until = self.hold_until;
            let answer = tokio::select! {
                answer = stream.message() => answer,
                changed = losses.changed() => {
                    if changed.is_ok() {
                        return Ended::DataLost;
                    }
                    continue;
                }
                () = sleep_until(hold_until) => {
                    self.held.clear();
                    self.hold_until = None;
                    tx.send_replace(V::build(&self.view(), self.revision));
                    continue;
                }
            };
            let answer = match answer {
                Ok(Some(answer)) => answer,
                Ok(None) | Err(_) => return resume(created_at),
            };
            if answer.compact_revision() > 0 {
                tracing::info!(prefix = %self.prefix, applied = self.revision,
                    compacted = answer.compact_revision(), "watched revision compacted; relisting");
                return Ended::Compacted;
            }
            if answer.canceled() {
                return resume(created_at);
            }
            if answer.created() {
                let store_revision = answer.header().map_or(0, |h| h.revision());
                if store_revision < self.revision {
                    // Either the store lost its data or this member lags behind the others:
                    // a linearizable read tells which.
                    tracing::info!(prefix = %self.prefix, store_revision, applied = self.revision,
                        "the kvstore's revision went backwards");
                    return match self.shared.store_lost().await {
                        Ok(true) => {
                            self.shared.suspect_data_loss();
                            Ended::DataLost
                        }
                        Ok(false) | Err(_) => Ended::Resume { steady: false },
                    };
                }
                created_at = Some(Instant::now());
                continue;
            }
            let mut changed = Vec::new();
            for event in answer.events() {
                let Some(kv) = event.kv() else { continue };
                self.revision = self.revision.max(kv.mod_revision());
                let Some(key) = crate::keys::suffix(kv.key(), &self.prefix) else {
                    continue;
                };
                self.held.remove(key);
                // A value that does not decode replaces the previous one by nothing.
                let value = match event.event_type() {
                    EventType::Put => V::decode(key, kv.value()),
                    EventType::Delete => None,
                };
                match value {
                    Some(value) => self.entries.insert(key.to_owned(), value),
                    None => self.entries.remove(key),
                };
                changed.push(key.to_owned());
            }
            if !changed.is_empty() {
                // A key just watched is no longer held: the snapshot's entry is etcd's.
                tx.send_modify(|snapshot| {
                    for key in &changed {
                        V::update(snapshot, key, self.entries.get(key));
                    }
                    V::set_revision(snapshot, self.revision);
                });
                self.shared.applied(self.revision);
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
