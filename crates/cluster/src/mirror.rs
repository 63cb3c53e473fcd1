//! A local mirror of one key prefix: listed once, then kept current by a watch that resumes
//! from the last revision it applied, relisting only when that revision was compacted or the
//! store lost its data.
//!
//! Owns the raw key → value map of the prefix and when to publish it. After a data loss the
//! entries missing from the relist are held for two lease times, so that their owners can
//! re-create them without the snapshot ever losing them in between. It must not interpret
//! the values: the caller's `build` turns the map into the snapshot it publishes.

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

/// The keys of a prefix (relative to it) and their values, at a revision.
pub(crate) type Entries = BTreeMap<String, Vec<u8>>;

/// Lists `prefix` and starts the task that keeps the published snapshot current.
pub(crate) async fn start<T, F>(
    shared: &Arc<Shared>,
    prefix: String,
    build: F,
) -> Result<(watch::Receiver<T>, JoinHandle<()>), ClusterError>
where
    T: Send + Sync + 'static,
    F: Fn(&Entries, i64) -> T + Send + Sync + 'static,
{
    let (kvs, revision) = shared.list(&prefix).await?;
    let mut mirror = Mirror {
        shared: shared.clone(),
        entries: Entries::new(),
        held: Entries::new(),
        hold_until: None,
        revision,
        prefix,
    };
    mirror.replace(kvs, revision, false);
    let (tx, rx) = watch::channel(build(&mirror.view(), revision));
    shared.applied(revision);
    let task = tokio::spawn(mirror.run(tx, build));
    Ok((rx, task))
}

struct Mirror {
    shared: Arc<Shared>,
    prefix: String,
    /// What etcd holds, as far as this mirror has seen.
    entries: Entries,
    /// Entries a relist after a data loss did not find, kept until `hold_until`.
    held: Entries,
    hold_until: Option<Instant>,
    /// The revision up to which every change has been applied.
    revision: i64,
}

/// Why a watch ended.
enum Ended {
    /// The stream broke or was cancelled: resume from the last revision.
    Resume,
    /// The revision to resume from was compacted: list again.
    Compacted,
    /// The store lost its data: list again, holding what is missing.
    DataLost,
}

impl Mirror {
    /// The published view: etcd's entries, plus those held after a data loss.
    fn view(&self) -> Entries {
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
            let (key, value) = kv.into_key_value();
            if let Some(relative) = key
                .strip_prefix(self.prefix.as_bytes())
                .and_then(|k| String::from_utf8(k.to_vec()).ok())
            {
                fresh.insert(relative, value);
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

    async fn run<T, F>(mut self, tx: watch::Sender<T>, build: F)
    where
        F: Fn(&Entries, i64) -> T,
    {
        let mut losses = self.shared.losses.subscribe();
        losses.mark_unchanged();
        let mut backoff = FIRST_BACKOFF;
        let mut relist: Option<bool> = None;
        loop {
            if let Some(hold) = relist {
                match self.shared.list(&self.prefix).await {
                    Ok((kvs, revision)) => {
                        self.replace(kvs, revision, hold);
                        tx.send_replace(build(&self.view(), self.revision));
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
            match self
                .follow(stream, &tx, &build, &mut losses, &mut backoff)
                .await
            {
                Ended::Resume => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Ended::Compacted => relist = Some(false),
                Ended::DataLost => relist = Some(true),
            }
        }
    }

    /// Applies the events of one watch stream until it ends.
    async fn follow<T, F>(
        &mut self,
        mut stream: WatchStream,
        tx: &watch::Sender<T>,
        build: &F,
        losses: &mut watch::Receiver<u64>,
        backoff: &mut Duration,
    ) -> Ended
    where
        F: Fn(&Entries, i64) -> T,
    {
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
                    tx.send_replace(build(&self.view(), self.revision));
                    continue;
                }
            };
            let answer = match answer {
                Ok(Some(answer)) => answer,
                Ok(None) | Err(_) => return Ended::Resume,
            };
            if answer.compact_revision() > 0 {
                tracing::info!(prefix = %self.prefix, applied = self.revision,
                    compacted = answer.compact_revision(), "watched revision compacted; relisting");
                return Ended::Compacted;
            }
            if answer.canceled() {
                return Ended::Resume;
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
                        Ok(false) | Err(_) => Ended::Resume,
                    };
                }
                *backoff = FIRST_BACKOFF;
                continue;
            }
            let mut changed = false;
            for event in answer.events() {
                let Some(kv) = event.kv() else { continue };
                self.revision = self.revision.max(kv.mod_revision());
                let Some(key) = kv
                    .key()
                    .strip_prefix(self.prefix.as_bytes())
                    .and_then(|k| std::str::from_utf8(k).ok())
                else {
                    continue;
                };
                self.held.remove(key);
                match event.event_type() {
                    EventType::Put => {
                        self.entries.insert(key.to_owned(), kv.value().to_vec());
                    }
                    EventType::Delete => {
                        self.entries.remove(key);
                    }
                }
                changed = true;
            }
            if changed {
                tx.send_replace(build(&self.view(), self.revision));
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
