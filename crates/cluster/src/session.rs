//! A node's session with etcd: the connection, this node's lease and its keepalive, the
//! health of the node's view, and the recovery of what the node owns after etcd failed.
//!
//! Owns the lease (every key this node owns is attached to it, so a dead node's keys vanish
//! with it, and a closed session revokes it), when the node's heartbeat is written (at each
//! renewal), the record of what this node owns (its endpoints and identity references, and the
//! references released whose deletion is pending), the etcd members' health and names, the
//! stale flag, and the detection that etcd lost its data: the epoch key is gone or holds
//! another value than the one this node knows (each recovery writes a value of its own), or
//! the store's revision went backwards. While it re-creates what the node owns it keeps
//! renewing the lease it has just been granted, so that a long restore cannot outlive it. It
//! also owns the writing of many keys in few transactions. It must not decide what the owned keys hold:
//! the identity, endpoint and policy modules do, and this module only asks them to re-create
//! their keys.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, DeleteResponse,
    GetOptions, GetResponse, Identity, LeaseTimeToLiveOptions, PutOptions, PutResponse, TlsOptions,
    Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{ClusterConfig, IdentitySource};
use crate::endpoints::EndpointsSnapshot;
use crate::error::ClusterError;
use crate::identity::{Held, IdentitiesSnapshot};
use crate::keys::{Keys, LabelsKey};
use crate::nodes::NodesSnapshot;
use crate::policies::PoliciesSnapshot;
use crate::{cilium, endpoints, identity, nodes, policies};

/// How long one request may take, retries included, before etcd counts as unavailable (as
/// etcdctl's command timeout). A leader election under load can take seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The pause before a request that failed in transport is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The most operations etcd takes in one transaction, by default (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;

/// The most bytes of keys and values sent in one transaction: well under etcd's default
/// request limit (`--max-request-bytes`, 1.5 MiB).
const MAX_TXN_BYTES: usize = 1024 * 1024;

/// Whether an error is the transport's (a member died under the request, or answered that
/// it has no leader) rather than etcd's answer to the request.
fn is_transient(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable || std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

/// How a node's view of the cluster stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// Since when etcd has not answered this node (its keepalive failed); `None` while it
    /// answers. A stale node keeps the last state it had.
    pub stale_since: Option<SystemTime>,
    /// The revision of the last change this node applied from its watches.
    pub revision: i64,
    /// How many times this node found that etcd had lost its data and re-created its state.
    pub data_losses: u64,
    /// How many times this node found its lease gone (expired while it was cut off, or lost
    /// with etcd's data) and re-created its keys under a new one.
    pub lease_losses: u64,
    /// How many times this node found keys it owns deleted under a live lease and wrote them
    /// again.
    pub repairs: u64,
    /// The etcd members as this node last probed them, in configuration order.
    pub members: Vec<MemberHealth>,
}

/// One etcd member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    /// Its name in etcd (`--name`), once it has answered a probe.
    pub name: Option<String>,
    /// Its client URL, as configured.
    pub endpoint: String,
    /// Whether it answered and knew a leader at the last probe.
    pub healthy: bool,
}

/// What this node owns in etcd, kept to re-create it.
#[derive(Debug, Default)]
pub(crate) struct Owned {
    /// Its endpoints: name → JSON as published.
    pub(crate) endpoints: BTreeMap<String, String>,
    /// The label sets it references, with their numbers and how often they were allocated.
    pub(crate) identities: BTreeMap<LabelsKey, Held>,
    /// References released whose deletion has not been confirmed yet: label set → the mod
    /// revision the reference had when it was released (a reference written again since is
    /// not deleted).
    pub(crate) released: BTreeMap<LabelsKey, i64>,
}

/// What the session's tasks share.
pub(crate) struct Shared {
    pub(crate) config: ClusterConfig,
    pub(crate) keys: Keys,
    client: Client,
    /// How long one request to etcd may take before the node counts it as unavailable.
    pub(crate) request_timeout: Duration,
    lease: AtomicI64,
    /// The value of the epoch key this node knows: written by whichever node first found
    /// the store empty, unique to that store's life.
    epoch: Mutex<String>,
    /// The highest store revision this node has seen.
    max_revision: AtomicI64,
    health: watch::Sender<Health>,
    owned: Mutex<Owned>,
    /// Held by the publication of this node's endpoints and by a restore, so that they never
    /// interleave. Identity allocation and release do not take it (they must not wait for
    /// one another's etcd round trips): they record what they hold in `owned` before or
    /// after etcd answers, and check the lease and the references' revisions instead.
    pub(crate) writes: tokio::sync::Mutex<()>,
    /// Counts the data losses handled; the watchers relist when it changes.
    pub(crate) losses: watch::Sender<u64>,
    /// Wakes the health task at once (a watcher saw the revision go backwards).
    check_now: Notify,
    /// The policies as last watched, for restoring them after a data loss (set once the
    /// watch has started).
    pub(crate) policies: OnceLock<watch::Receiver<PoliciesSnapshot>>,
    /// The identities as last watched, where allocation looks first (set once the watch has
    /// started, with Axoneme's own identities).
    pub(crate) identities: OnceLock<watch::Receiver<IdentitiesSnapshot>>,
}

impl Shared {
    /// A handle for one request (the client is a cheap clone of one channel).
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs one etcd request with the session's deadline, naming the operation in the error.
    /// A request that failed in transport (its member died under it, or has no leader) is
    /// sent again until the deadline: the client may route it to another member. So is one
    /// that has not been answered in a third of the deadline: a member that lost its leader
    /// holds a write until its own timeout, while a new leader is elected in a fraction of
    /// that. Every request sent is one that may be repeated: puts and deletes are idempotent,
    /// and each transaction's comparisons make a repeat of an applied one fail harmlessly.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        operation: impl FnOnce() -> String,
        mut request: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let attempt_deadline = deadline.min(Instant::now() + self.request_timeout / 3);
            match tokio::time::timeout_at(attempt_deadline, request(self.client())).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(source))
                    if is_transient(&source) && Instant::now() + RETRY_PAUSE < deadline =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Err(source)) => {
                    return Err(ClusterError::Kvstore {
                        operation: operation(),
                        source,
                    })
                }
                Err(_) if Instant::now() < deadline => {}
                Err(_) => {
                    return Err(ClusterError::Unavailable {
                        operation: operation(),
                        timeout_ms: self.request_timeout.as_millis(),
                    })
                }
            }
        }
    }

    /// Reads keys.
    pub(crate) async fn get(
        &self,
        operation: impl FnOnce() -> String,
        key: &str,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, ClusterError> {
        self.call(operation, |mut client| {
            let options = options.clone();
            let key = key.to_owned();
            async move { client.get(key, options).await }
        })
        .await
    }

    /// Writes a key.
    pub(crate) async fn put(
        &self,
        operation: impl FnOnce() -> String,
        key: &str,
        value: &str,
        options: Option<PutOptions>,
    ) -> Result<PutResponse, ClusterError> {
        let answer = self
            .call(operation, |mut client| {
                let (key, value, options) = (key.to_owned(), value.to_owned(), options.clone());
                async move { client.put(key, value, options).await }
            })
            .await?;
        if let Some(header) = answer.header() {
            self.saw_revision(header.revision());
        }
        Ok(answer)
    }

    /// Deletes keys.
    pub(crate) async fn delete(
        &self,
        operation: impl FnOnce() -> String,
        key: &str,
        options: Option<DeleteOptions>,
    ) -> Result<DeleteResponse, ClusterError> {
        self.call(operation, |mut client| {
            let (key, options) = (key.to_owned(), options.clone());
            async move { client.delete(key, options).await }
        })
        .await
    }

    /// Runs a transaction.
    pub(crate) async fn txn(
        &self,
        operation: impl FnOnce() -> String,
        txn: Txn,
    ) -> Result<TxnResponse, ClusterError> {
        let answer = self
            .call(operation, |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?;
        if let Some(header) = answer.header() {
            self.saw_revision(header.revision());
        }
        Ok(answer)
    }

    /// This node's lease.
    pub(crate) fn lease(&self) -> i64 {
        self.lease.load(Ordering::Acquire)
    }

    pub(crate) fn owned(&self) -> MutexGuard<'_, Owned> {
        self.owned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes a store revision seen in an answer.
    pub(crate) fn saw_revision(&self, revision: i64) {
        self.max_revision.fetch_max(revision, Ordering::AcqRel);
    }

    /// Notes that a watcher applied a change of this revision.
    pub(crate) fn applied(&self, revision: i64) {
        self.saw_revision(revision);
        self.health.send_if_modified(|health| {
            let newer = revision > health.revision;
            if newer {
                health.revision = revision;
            }
            newer
        });
    }

    /// A watcher saw the store's revision go backwards: the health task checks at once.
    pub(crate) fn suspect_data_loss(&self) {
        self.check_now.notify_one();
    }

    fn mark_stale(&self, error: &ClusterError) {
        self.health.send_if_modified(|health| {
            if health.stale_since.is_some() {
                return false;
            }
            tracing::warn!(%error, "kvstore unavailable; keeping the last state");
            health.stale_since = Some(SystemTime::now());
            true
        });
    }

    fn mark_fresh(&self) {
        self.health.send_if_modified(|health| {
            let was_stale = health.stale_since.take().is_some();
            if was_stale {
                tracing::info!("kvstore answers again");
            }
            was_stale
        });
    }

    /// Renews the lease once; `false` when etcd no longer knows it. (Opening the keepalive
    /// stream sends the first renewal and reads its answer; the client reports a lease etcd
    /// does not know as a keepalive error.)
    async fn keep_alive_once(&self) -> Result<bool, ClusterError> {
        let lease = self.lease();
        match self
            .call(
                || format!("renew lease {lease:x}"),
                |mut client| async move { client.lease_keep_alive(lease).await },
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(ClusterError::Kvstore {
                source: etcd_client::Error::LeaseKeepAliveError(_),
                ..
            }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Grants a new lease for this node.
    async fn grant_lease(&self) -> Result<(), ClusterError> {
        let ttl = i64::try_from(self.config.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        let granted = self
            .call(
                || "grant this node's lease".to_owned(),
                |mut client| async move { client.lease_grant(ttl, None).await },
            )
            .await?;
        self.lease.store(granted.id(), Ordering::Release);
        Ok(())
    }

    /// Creates the epoch key if absent, with a value no other store's life has, and returns
    /// the value it holds and the store's revision.
    async fn establish_epoch(&self) -> Result<(String, i64), ClusterError> {
        let key = self.keys.epoch();
        let fresh = new_epoch(&self.config.node);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), fresh.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let answer = self.txn(|| "create the epoch key".to_owned(), txn).await?;
        let revision = answer.header().map_or(0, |h| h.revision());
        if answer.succeeded() {
            return Ok((fresh, revision));
        }
        // The key exists (the comparison failed on it), so the get in the same transaction
        // finds it; were it ever absent, an empty value matches no epoch and the next check
        // starts over.
        let epoch = answer
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        Ok((epoch, revision))
    }

    /// The epoch key's value (`None` when it is missing) and the store's revision.
    async fn read_epoch(&self) -> Result<Option<(String, i64)>, ClusterError> {
        let answer = self
            .get(|| "read the epoch key".to_owned(), &self.keys.epoch(), None)
            .await?;
        let revision = answer.header().map_or(0, |h| h.revision());
        Ok(answer
            .kvs()
            .first()
            .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), revision)))
    }

    fn known_epoch(&self) -> String {
        self.epoch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_epoch(&self, epoch: String) {
        *self
            .epoch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = epoch;
    }

    /// Whether etcd lost its data: the epoch key is missing or holds another value than the
    /// one this node knows (a recovery after a wipe this node has not seen wrote it), or a
    /// linearizable read returns a revision older than one this node has already seen.
    pub(crate) async fn store_lost(&self) -> Result<bool, ClusterError> {
        // Loaded before the read: every revision seen so far must be covered by it.
        let max_revision = self.max_revision.load(Ordering::Acquire);
        let known = self.known_epoch();
        let lost = match self.read_epoch().await? {
            None => true,
            Some((epoch, revision)) => {
                let lost = epoch != known || revision < max_revision;
                if lost {
                    tracing::warn!(
                        epoch,
                        known_epoch = known,
                        revision,
                        max_revision,
                        "the kvstore lost its data"
                    );
                } else {
                    self.saw_revision(revision);
                }
                lost
            }
        };
        Ok(lost)
    }

    /// One round of the health task. The writes lock is held while owned keys are compared
    /// and re-created, so that no publication interleaves (waiting for it only once the lease
    /// is gone anyway); then the references released whose deletion failed are deleted.
    async fn check(self: &Arc<Self>) -> Result<(), ClusterError> {
        let lease_alive = self.keep_alive_once().await?;
        if self.store_lost().await? {
            tracing::warn!("re-creating this node's state");
            let _writes = self.writes.lock().await;
            self.recover_data_loss().await
        } else if !lease_alive {
            tracing::warn!("this node's lease is gone; re-creating its keys under a new one");
            let _writes = self.writes.lock().await;
            self.grant_lease().await?;
            self.renewing_lease(self.restore_owned()).await?;
            self.health.send_modify(|health| health.lease_losses += 1);
            Ok(())
        } else {
            // Never waits: the keepalive must not stall behind a long allocation. A busy
            // lock defers the comparison to a later round.
            let Ok(_writes) = self.writes.try_lock() else {
                return Ok(());
            };
            if self.owned_keys_missing().await? {
                tracing::warn!("keys this node owns were deleted; writing them again");
                self.renewing_lease(self.restore_owned()).await?;
                self.health.send_modify(|health| health.repairs += 1);
            }
            drop(_writes);
            identity::delete_released(self).await
        }
    }

    /// The keys this node must hold under its lease: its endpoints and identity references.
    fn owned_keys(&self) -> BTreeSet<String> {
        let owned = self.owned();
        let endpoints = self.keys.node_endpoints(&self.config.node);
        owned
            .endpoints
            .keys()
            .map(|name| format!("{endpoints}{name}"))
            .chain(
                owned
                    .identities
                    .keys()
                    .map(|labels| self.keys.identity_reference(labels, &self.config.node)),
            )
            .collect()
    }

    /// Whether a key this node owns is no longer attached to its lease (deleted by hand, or
    /// by a tool that cleaned the prefix). One request: etcd lists the lease's keys.
    async fn owned_keys_missing(&self) -> Result<bool, ClusterError> {
        let lease = self.lease();
        let answer = self
            .call(
                || format!("list the keys of lease {lease:x}"),
                |mut client| async move {
                    let options = LeaseTimeToLiveOptions::new().with_keys();
                    client.lease_time_to_live(lease, Some(options)).await
                },
            )
            .await?;
        let attached: BTreeSet<&[u8]> = answer.keys().iter().map(Vec::as_slice).collect();
        Ok(self
            .owned_keys()
            .iter()
            .any(|key| !attached.contains(key.as_bytes())))
    }

    /// Re-creates everything after etcd lost its data.
    async fn recover_data_loss(self: &Arc<Self>) -> Result<(), ClusterError> {
        let (epoch, revision) = self.establish_epoch().await?;
        self.grant_lease().await?;
        self.renewing_lease(async {
            self.restore_owned().await?;
            policies::restore(self).await
        })
        .await?;
        self.set_epoch(epoch);
        self.max_revision.store(revision, Ordering::Release);
        self.health.send_modify(|health| {
            health.data_losses += 1;
            health.revision = revision;
        });
        self.losses.send_modify(|losses| *losses += 1);
        Ok(())
    }

    /// Runs `work` (a restore of this node's keys) while renewing the lease every third of
    /// its time to live, as the health task would were it not busy with the work: a restore
    /// that takes longer than the lease must not outlive it. Fails if etcd no longer knows
    /// the lease, since every key written under it since is gone.
    async fn renewing_lease<T>(
        &self,
        work: impl Future<Output = Result<T, ClusterError>>,
    ) -> Result<T, ClusterError> {
        let renew = async {
            let interval = self.config.lease_ttl / 3;
            loop {
                tokio::time::sleep(interval).await;
                match self.keep_alive_once().await {
                    Ok(true) => {}
                    Ok(false) => {
                        return ClusterError::LeaseLost {
                            lease: self.lease(),
                        }
                    }
                    // The restore's own requests fail too if etcd is gone.
                    Err(error) => tracing::debug!(%error, "renewing the lease while restoring"),
                }
            }
        };
        tokio::select! {
            result = work => result,
            error = renew => Err(error),
        }
    }

    /// Writes `ops` in as few transactions as etcd takes (at most [`MAX_TXN_OPS`] operations
    /// and about [`MAX_TXN_BYTES`] each, `bytes` being each operation's keys and values),
    /// without conditions of their own: a create-if-absent is a nested transaction. Returns
    /// each operation's answer, in order, with the revision of the transaction that carried
    /// it. Every operation must be one that may be repeated (see [`Shared::call`]), and no
    /// two may write the same key.
    pub(crate) async fn write_batched(
        &self,
        what: &str,
        ops: Vec<(TxnOp, usize)>,
    ) -> Result<Vec<(TxnOpResponse, i64)>, ClusterError> {
        let total = ops.len();
        let mut answers = Vec::with_capacity(total);
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut ops = ops.into_iter().peekable();
        while let Some((op, bytes)) = ops.next() {
            batch.push(op);
            batch_bytes += bytes;
            let full = match ops.peek() {
                None => true,
                Some((_, next)) => batch.len() == MAX_TXN_OPS || batch_bytes + next > MAX_TXN_BYTES,
            };
            if !full {
                continue;
            }
            let done = answers.len();
            let count = batch.len();
            let txn = Txn::new().and_then(std::mem::take(&mut batch));
            batch_bytes = 0;
            let answer = self
                .txn(
                    || format!("{what} ({} to {} of {total})", done + 1, done + count),
                    txn,
                )
                .await?;
            let revision = answer.header().map_or(0, |h| h.revision());
            answers.extend(answer.op_responses().into_iter().map(|op| (op, revision)));
        }
        Ok(answers)
    }

    /// Re-creates this node's keys under its current lease (and the master keys of its
    /// identities where they are gone, keeping their numbers where they are free). The caller
    /// holds the writes lock.
    async fn restore_owned(self: &Arc<Self>) -> Result<(), ClusterError> {
        if self.config.identity_source == IdentitySource::Axoneme {
            identity::restore(self).await?;
        }
        endpoints::restore(self).await
    }

    /// Puts a key attached to this node's lease.
    pub(crate) async fn put_owned(&self, key: String, value: String) -> Result<(), ClusterError> {
        let options = PutOptions::new().with_lease(self.lease());
        self.put(|| format!("write {key}"), &key, &value, Some(options))
            .await?;
        Ok(())
    }

    /// Lists the keys under a prefix with the store's revision.
    pub(crate) async fn list(
        &self,
        prefix: &str,
    ) -> Result<(Vec<etcd_client::KeyValue>, i64), ClusterError> {
        let mut answer = self
            .get(
                || format!("list {prefix}"),
                prefix,
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        let revision = answer.header().map_or(0, |h| h.revision());
        self.saw_revision(revision);
        Ok((answer.take_kvs(), revision))
    }
}

/// A node's session with the cluster's etcd.
///
/// Connecting grants the node's lease, reads the current endpoints, policies and identities,
/// and starts the tasks that keep the lease alive, watch those prefixes and collect unused
/// identities. Dropping the session stops its tasks and leaves its keys to expire with the
/// lease, as a crashed node would; [`Session::close`] removes them at once.
pub struct Session {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    nodes: watch::Receiver<NodesSnapshot>,
    endpoints: watch::Receiver<EndpointsSnapshot>,
    policies: watch::Receiver<PoliciesSnapshot>,
    identities: watch::Receiver<IdentitiesSnapshot>,
}

impl Session {
    /// Connects to etcd, grants this node's lease and starts watching.
    pub async fn connect(config: ClusterConfig) -> Result<Session, ClusterError> {
        config.validate()?;
        let request_timeout = REQUEST_TIMEOUT;
        let options = connect_options(&config, request_timeout)?;
        let client = match tokio::time::timeout(
            request_timeout,
            Client::connect(&config.kvstore.endpoints, Some(options)),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(source)) => {
                return Err(ClusterError::Kvstore {
                    operation: format!("connect to {}", config.kvstore.endpoints.join(", ")),
                    source,
                })
            }
            Err(_) => {
                return Err(ClusterError::Unavailable {
                    operation: format!("connect to {}", config.kvstore.endpoints.join(", ")),
                    timeout_ms: request_timeout.as_millis(),
                })
            }
        };
        let keys = Keys::new(&config.name);
        let (health, _) = watch::channel(Health::default());
        let (losses, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            config,
            keys,
            client,
            request_timeout,
            lease: AtomicI64::new(0),
            epoch: Mutex::new(String::new()),
            max_revision: AtomicI64::new(0),
            health,
            owned: Mutex::new(Owned::default()),
            writes: tokio::sync::Mutex::new(()),
            losses,
            check_now: Notify::new(),
            policies: OnceLock::new(),
            identities: OnceLock::new(),
        });
        let (epoch, revision) = shared.establish_epoch().await?;
        shared.set_epoch(epoch);
        shared.saw_revision(revision);
        shared.grant_lease().await?;
        nodes::beat(&shared).await?;

        let mut tasks = Vec::new();
        let (nodes, task) = nodes::watch(&shared).await?;
        tasks.push(task);
        let (endpoints, task) = endpoints::watch(&shared).await?;
        tasks.push(task);
        let (policies, task) = policies::watch(&shared).await?;
        tasks.push(task);
        // Set once, here, before the keepalive task (the only reader) starts.
        let _ = shared.policies.set(policies.clone());
        let identities = match shared.config.identity_source {
            IdentitySource::Axoneme => {
                let (identities, task) = identity::watch(&shared).await?;
                tasks.push(task);
                // Set once, here, before any allocation can run.
                let _ = shared.identities.set(identities.clone());
                tasks.push(tokio::spawn(identity::collect_garbage(shared.clone())));
                identities
            }
            IdentitySource::Cilium => {
                let (identities, watch_tasks) = cilium::watch(&shared).await?;
                tasks.extend(watch_tasks);
                identities
            }
        };
        tasks.push(tokio::spawn(keep_alive(shared.clone())));
        tasks.push(tokio::spawn(probe_members(shared.clone())));
        Ok(Session {
            shared,
            tasks,
            nodes,
            endpoints,
            policies,
            identities,
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The configuration the session was started with.
    pub fn config(&self) -> &ClusterConfig {
        &self.shared.config
    }

    /// The health of this node's view, as it changes.
    pub fn health(&self) -> watch::Receiver<Health> {
        self.shared.health.subscribe()
    }

    /// Whether etcd has stopped answering this node; the last state is kept meanwhile.
    pub fn is_stale(&self) -> bool {
        self.shared.health.borrow().stale_since.is_some()
    }

    /// Since when this node's view is stale.
    pub fn stale_since(&self) -> Option<SystemTime> {
        self.shared.health.borrow().stale_since
    }

    /// The revision of the last change this node applied.
    pub fn revision(&self) -> i64 {
        self.shared.health.borrow().revision
    }

    /// The id of this node's current lease.
    pub fn lease_id(&self) -> i64 {
        self.shared.lease()
    }

    /// Every node's last heartbeat, as they change: the nodes alive in the cluster.
    pub fn nodes(&self) -> watch::Receiver<NodesSnapshot> {
        self.nodes.clone()
    }

    /// Every node's endpoints, as they change.
    pub fn endpoints(&self) -> watch::Receiver<EndpointsSnapshot> {
        self.endpoints.clone()
    }

    /// Every policy of the cluster, as they change.
    pub fn policies(&self) -> watch::Receiver<PoliciesSnapshot> {
        self.policies.clone()
    }

    /// The cluster's identities (and, from Cilium, its address → identity map), as they
    /// change.
    pub fn identities(&self) -> watch::Receiver<IdentitiesSnapshot> {
        self.identities.clone()
    }

    /// Stops the session's tasks and revokes its lease, so its heartbeat, endpoints and
    /// identity references are removed at once rather than when the lease would expire. The
    /// snapshots keep their last state; writes afterwards fail.
    pub async fn close(&self) -> Result<(), ClusterError> {
        for task in &self.tasks {
            task.abort();
        }
        let lease = self.shared.lease();
        self.shared
            .call(
                || format!("revoke lease {lease:x}"),
                |mut client| async move { client.lease_revoke(lease).await },
            )
            .await?;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// An epoch value for a store found empty: the node, the time and a random number, so that
/// no two recoveries (nor two nodes recovering at once) write the same one.
fn new_epoch(node: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Seeded from the operating system's randomness for each process, and anew for each call.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("created by {node} at {nanos} ns, {random:016x}")
}

/// The client's options: TLS and login from the configuration; HTTP/2 keepalive so that a
/// connection to a vanished member is noticed; and requests refused by a member without a
/// leader, so that a node cut off from the quorum knows it is stale.
fn connect_options(
    config: &ClusterConfig,
    request_timeout: Duration,
) -> Result<ConnectOptions, ClusterError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(request_timeout)
        .with_keep_alive(Duration::from_secs(1), request_timeout)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let Some(tls) = &config.kvstore.tls {
        let read = |field: &'static str, path: &String| {
            std::fs::read(path).map_err(|source| ClusterError::TlsFile {
                field,
                path: path.clone(),
                source,
            })
        };
        let ca = read("ca", &tls.ca)?;
        let cert = read("cert", &tls.cert)?;
        let key = read("key", &tls.key)?;
        options = options.with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(cert, key)),
        );
    }
    if let (Some(user), Some(password)) = (&config.kvstore.username, &config.kvstore.password) {
        // etcd's tokens expire (after 5 minutes by default): an agent runs for longer.
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    Ok(options)
}

/// Renews the lease every third of its time to live, checks that etcd still holds this node's
/// state and writes the node's heartbeat; marks the node stale while etcd does not answer.
async fn keep_alive(shared: Arc<Shared>) {
    let interval = shared.config.lease_ttl / 3;
    loop {
        let checked = match shared.check().await {
            Ok(()) => nodes::beat(&shared).await,
            Err(error) => Err(error),
        };
        match checked {
            Ok(()) => shared.mark_fresh(),
            Err(error) => shared.mark_stale(&error),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shared.check_now.notified() => {}
        }
    }
}

/// Probes every member with a client of its own, and keeps the session's client to those
/// that answer with a leader. The client balances requests over its endpoints without
/// failing over, so a request sent to a dead member would wait for its deadline: taking the
/// member out of rotation (and back in when it answers) keeps a lost member without effect.
async fn probe_members(shared: Arc<Shared>) {
    let endpoints = shared.config.kvstore.endpoints.clone();
    let timeout = shared.request_timeout.min(Duration::from_secs(1));
    let mut probes: Vec<Option<Client>> = vec![None; endpoints.len()];
    let mut in_rotation = vec![true; endpoints.len()];
    // The members' names, kept while a member is down.
    let mut names: Vec<Option<String>> = vec![None; endpoints.len()];
    loop {
        let mut members = Vec::with_capacity(endpoints.len());
        for ((endpoint, probe), name) in endpoints.iter().zip(&mut probes).zip(&mut names) {
            let (healthy, id) = probe_member(&shared.config, endpoint, probe, timeout).await;
            if let (None, Some(id), Some(client)) = (name.as_ref(), id, probe.as_mut()) {
                *name = member_name(client, id, timeout).await;
            }
            members.push(MemberHealth {
                name: name.clone(),
                endpoint: endpoint.clone(),
                healthy,
            });
        }
        // With no member healthy, all stay in rotation: nothing is gained by removing them.
        let any_healthy = members.iter().any(|m| m.healthy);
        for (member, in_rotation) in members.iter().zip(&mut in_rotation) {
            let wanted = member.healthy || !any_healthy;
            let changed = if wanted && !*in_rotation {
                shared.client.add_endpoint(&member.endpoint).await
            } else if !wanted && *in_rotation {
                shared.client.remove_endpoint(&member.endpoint).await
            } else {
                continue;
            };
            match changed {
                Ok(()) => {
                    *in_rotation = wanted;
                    tracing::info!(endpoint = %member.endpoint, in_rotation = wanted,
                        "etcd member taken {}", if wanted { "back in" } else { "out of rotation" });
                }
                Err(error) => tracing::warn!(endpoint = %member.endpoint, %error,
                    "cannot change the etcd client's endpoints"),
            }
        }
        shared.health.send_if_modified(|health| {
            let changed = health.members != members;
            if changed {
                health.members = members;
            }
            changed
        });
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// How often the members are probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether one member answers its status and knows a leader, and its id when it answers.
async fn probe_member(
    config: &ClusterConfig,
    endpoint: &str,
    probe: &mut Option<Client>,
    timeout: Duration,
) -> (bool, Option<u64>) {
    if probe.is_none() {
        let Ok(options) = connect_options(config, timeout) else {
            return (false, None);
        };
        match tokio::time::timeout(timeout, Client::connect([endpoint], Some(options))).await {
            Ok(Ok(client)) => *probe = Some(client),
            _ => return (false, None),
        }
    }
    let Some(client) = probe.as_mut() else {
        return (false, None);
    };
    match tokio::time::timeout(timeout, client.status()).await {
        Ok(Ok(status)) => (
            status.leader() != 0,
            status.header().map(|header| header.member_id()),
        ),
        _ => (false, None),
    }
}

/// The name of member `id`, from the member list as `client`'s member gives it.
async fn member_name(client: &mut Client, id: u64, timeout: Duration) -> Option<String> {
    let list = tokio::time::timeout(timeout, client.member_list())
        .await
        .ok()?
        .ok()?;
    list.members()
        .iter()
        .find(|member| member.id() == id)
        .map(|member| member.name().to_owned())
        .filter(|name| !name.is_empty())
}
