//! Cluster mode on the agent's side: the node's session with the kvstore, the cluster's
//! policies followed into the state, policy imports and deletions written to the kvstore, and
//! the view of the kvstore's health that the API, the status and the metrics show.
//!
//! It owns the [`Session`] and the task that applies every new set of the cluster's policies
//! to the [`State`], all or none, as a local import would be: a set that does not parse or
//! compile is logged and the last good state stays in force. It must not change the state in
//! any other way, decide verdicts, or talk to etcd except through the session; and it must not
//! let an unreachable kvstore change what is enforced (the last state stays, never allow-all).
//!
//! It also publishes the endpoints this node hosts (from its configuration and API) under the
//! node's lease, again after every change, and applies every node's endpoints to the state as
//! remote endpoints named `<node>/<name>`: their addresses resolve to their labels' identity
//! here, but this node's listeners never guard them. A set of remote endpoints the state
//! refuses is logged and the last good one stays; a node whose lease expired has its endpoints
//! gone from the set, so its addresses resolve to the world again (fail closed).
//!
//! With `identitySource: axoneme` (the default), the numbers of identities come from the
//! cluster's allocator through [`ClusterNumbers`], so the same labels have the same number on
//! every node; the label sets no snapshot uses any more are released, without the state
//! waiting for etcd.
//!
//! With `identitySource: cilium`, it only reads Cilium's keys: a local endpoint's number is the
//! one Cilium gave its label set ([`CiliumNumbers`]; labels compare without their sources, so
//! `k8s:app=luke` is `app=luke`), and an endpoint whose labels Cilium has no identity for is
//! left out of the snapshot, its traffic refused, and named in the status and the log; no
//! number is made up. The remote identities are Cilium's IP cache: every address in it whose
//! identity Cilium knows resolves to that identity's labels (named `cilium/<ip>`), and the
//! other nodes' published endpoints are not used. Both follow Cilium's keys as they change.
//!
//! On shutdown, [`Cluster::close`] revokes the node's lease: its heartbeat, endpoints and
//! identity references vanish from the other nodes' views at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axoneme_cluster::{
    ClusterConfig, ClusterError, EndpointsSnapshot, IdentitiesSnapshot, IdentitySource,
    PoliciesSnapshot, Session,
};
use axoneme_policy::EndpointSpec;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::control::state::{CheckedImport, IdentityNumbers, Imported, State, StateError};
use crate::telemetry::metrics::KvstoreGauges;

/// How long a write waits for the kvstore's answer to come back through the watch and be
/// applied here, so that the import's answer means "in force on this node".
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// How long a failed publication of this node's endpoints waits before it is tried again.
const PUBLISH_RETRY: Duration = Duration::from_secs(1);

/// A policy change through the API that cluster mode refused or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum PolicyWriteError {
    /// The change itself is refused, as it would be without cluster mode.
    #[error(transparent)]
    State(#[from] StateError),
    /// The kvstore has not answered this node for a while: nothing is written.
    #[error(
        "the kvstore has not answered since {since}: policy changes are refused until it is \
         back; the policy in force stays"
    )]
    Stale {
        /// Since when, RFC 3339.
        since: String,
    },
    /// The kvstore refused the write or did not answer.
    #[error("{source}; the policy in force stays{}", written_note(.written))]
    Kvstore {
        /// Why.
        source: ClusterError,
        /// Policies of the same request written before the failure.
        written: Vec<String>,
    },
    /// Written, but not seen back and applied on this node in time.
    #[error("{change}, but not applied on this node within {} s", APPLY_WAIT.as_secs())]
    NotApplied {
        /// What was written, e.g. `written to the kvstore at revision 42`.
        change: String,
    },
    /// Written, but this node refuses the cluster's policies as a whole (another policy in
    /// the kvstore is bad); the last good state stays in force.
    #[error("written to the kvstore, but this node refuses the cluster's policies: {0}")]
    Refused(String),
}

fn written_note(written: &[String]) -> String {
    if written.is_empty() {
        String::new()
    } else {
        format!(" (written before the failure: {})", written.join(", "))
    }
}

/// What this node last did with the cluster's policies.
#[derive(Debug, Clone, Default)]
struct Processed {
    /// The kvstore revision of the set.
    revision: i64,
    /// The names in the set.
    names: BTreeSet<String>,
    /// Why the set was refused, when it was.
    refused: Option<String>,
}

/// What this node last did with the other nodes' endpoints.
#[derive(Debug, Clone, Default)]
struct RemoteView {
    /// The remote endpoints in force.
    endpoints: usize,
    /// Why the last set was refused, when it was (then the last good one is in force).
    refused: Option<String>,
}

/// A member of the kvstore as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// The member's name in etcd; none until it has answered.
    pub name: Option<String>,
    /// The member's client URL, as configured.
    pub endpoint: String,
    /// Whether it answered its last health probe.
    pub healthy: bool,
}

/// This node's view of the cluster, as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The cluster's name.
    pub cluster: String,
    /// This node's name.
    pub node: String,
    /// Whether the kvstore has stopped answering this node (the last state is enforced).
    pub stale: bool,
    /// Since when, RFC 3339; none when not stale.
    pub stale_since: Option<String>,
    /// For how long, in seconds (0 when not stale).
    pub stale_seconds: f64,
    /// The last kvstore revision this node has seen.
    pub revision: i64,
    /// The kvstore revision of the cluster's policies this node last processed.
    pub policies_revision: i64,
    /// Whether that set was refused here (then the last good one is in force).
    pub policies_refused: Option<String>,
    /// How many endpoints of other nodes are known here as remote identities.
    pub remote_endpoints: usize,
    /// Why the last set of the other nodes' endpoints was refused here (then the last good
    /// one is in force).
    pub endpoints_refused: Option<String>,
    /// The kvstore's members and their health.
    pub members: Vec<MemberStatus>,
    /// The nodes of the cluster: those with a heartbeat or endpoints in the kvstore.
    pub nodes: Vec<NodeStatus>,
    /// Where identity numbers come from: `axoneme` or `cilium`.
    pub identity_source: &'static str,
    /// This node's endpoints whose labels have no identity (from Cilium): left out of
    /// policy, their traffic refused.
    pub unidentified_endpoints: Vec<String>,
}

/// A node of the cluster as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// How many endpoints it publishes.
    pub endpoints: usize,
    /// When it last renewed its lease (RFC 3339, UTC, by its clock); none when its lease is
    /// gone and only its endpoints are still seen.
    pub last_heartbeat: Option<String>,
}

/// The node's part in the cluster: its session and the policies it follows.
pub struct Cluster {
    session: Arc<Session>,
    state: Arc<State>,
    processed: watch::Receiver<Processed>,
    remote: watch::Receiver<RemoteView>,
    /// Follows the cluster's policies, publishes this node's endpoints and follows the other
    /// nodes' endpoints (or, with Cilium's identities, Cilium's).
    tasks: [JoinHandle<()>; 3],
}

impl Cluster {
    /// Connects to the kvstore, applies the cluster's policies as they are now and starts
    /// following them. Fails when the kvstore cannot be reached, or when the cluster's
    /// policies cannot be applied: starting without them could allow what they deny.
    pub async fn start(config: &ClusterConfig, state: Arc<State>) -> anyhow::Result<Cluster> {
        use anyhow::Context as _;
        let endpoints = config.kvstore.endpoints.join(", ");
        let session = Session::connect(config.clone()).await.with_context(|| {
            format!(
                "cluster: cannot join cluster {:?} as node {:?} through the kvstore at {endpoints}",
                config.name, config.node
            )
        })?;
        let session = Arc::new(session);
        let numbers: Arc<dyn IdentityNumbers> = match config.identity_source {
            IdentitySource::Axoneme => Arc::new(ClusterNumbers::new(Arc::clone(&session))),
            IdentitySource::Cilium => Arc::new(CiliumNumbers {
                identities: session.identities(),
            }),
        };
        {
            let state = Arc::clone(&state);
            tokio::task::spawn_blocking(move || state.use_identity_numbers(numbers))
                .await?
                .context("cluster: the identities of this node's endpoints cannot be allocated")?;
        }
        let mut policies = session.policies();
        let first = policies.borrow_and_update().clone();
        let revision = apply(&state, first.policies.clone())
            .await
            .with_context(|| {
                format!(
                "cluster: the cluster's policies in the kvstore (revision {}) cannot be applied",
                first.revision
            )
            })?;
        tracing::info!(
            cluster = %config.name,
            node = %config.node,
            policies = first.policies.len(),
            kvstore_revision = first.revision,
            revision,
            "joined the cluster"
        );
        let (processed_tx, processed) = watch::channel(Processed {
            revision: first.revision,
            names: first.policies.keys().cloned().collect(),
            refused: None,
        });
        let follower = tokio::spawn(follow(
            Arc::clone(&state),
            policies,
            first.policies,
            processed_tx,
        ));
        let local = state.endpoints();
        session.publish_endpoints(&local).await.with_context(|| {
            format!(
                "cluster: cannot publish the endpoints of node {:?}",
                config.node
            )
        })?;
        let publisher = tokio::spawn(publish(Arc::clone(&session), Arc::clone(&state), local));
        let (remote_tx, remote) = watch::channel(RemoteView::default());
        let follower_of_endpoints = match config.identity_source {
            IdentitySource::Axoneme => {
                let mut endpoints = session.endpoints();
                let current = endpoints.borrow_and_update().clone();
                apply_remote(&state, &config.node, &current, &remote_tx).await;
                tokio::spawn(follow_endpoints(
                    Arc::clone(&state),
                    config.node.clone(),
                    endpoints,
                    remote_tx,
                ))
            }
            IdentitySource::Cilium => {
                let mut identities = session.identities();
                let current = identities.borrow_and_update().clone();
                apply_cilium(&state, &current, &remote_tx).await;
                tokio::spawn(follow_cilium(Arc::clone(&state), identities, remote_tx))
            }
        };
        Ok(Cluster {
            session,
            state,
            processed,
            remote,
            tasks: [follower, publisher, follower_of_endpoints],
        })
    }

    /// Writes a checked import to the kvstore and waits until this node has applied it.
    /// With `validate_only`, writes nothing.
    pub async fn import(
        &self,
        checked: CheckedImport,
        validate_only: bool,
    ) -> Result<Imported, PolicyWriteError> {
        let names: Vec<String> = checked
            .policies
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        if !validate_only {
            self.writable()?;
            let mut written = Vec::new();
            let mut revision = 0;
            for policy in &checked.policies {
                // The document as parsed, as JSON: a policy text of its own, one per key.
                let text = serde_json::to_string(policy.document()).map_err(|e| {
                    StateError::Invalid(format!(
                        "policy {:?} cannot be written as JSON: {e}",
                        policy.name()
                    ))
                })?;
                let put = self.session.put_policy(policy.name(), &text).await;
                revision = put.map_err(|source| PolicyWriteError::Kvstore {
                    source,
                    written: written.clone(),
                })?;
                written.push(policy.name().to_owned());
            }
            let change = format!("written to the kvstore at revision {revision}");
            self.wait_applied(change, |p| p.revision >= revision)
                .await?;
        }
        Ok(Imported {
            revision: self.state.revision(),
            names,
            warnings: checked.warnings,
        })
    }

    /// Deletes the cluster's policy `name`, or all of them when `None`, and waits until this
    /// node has applied that. Policies from this node's files are not the cluster's.
    pub async fn delete(&self, name: Option<&str>) -> Result<u64, PolicyWriteError> {
        let current: Vec<String> = self
            .session
            .policies()
            .borrow()
            .policies
            .keys()
            .cloned()
            .collect();
        let names = match name {
            None => current,
            Some(name) if current.iter().any(|n| n == name) => vec![name.to_owned()],
            Some(name) => {
                let policies = self.state.policies();
                return Err(match policies.iter().find(|p| p.name() == name) {
                    Some(p) => StateError::PolicyInFile {
                        name: name.into(),
                        file: p.source().into(),
                    },
                    None => StateError::PolicyNotFound(name.into()),
                }
                .into());
            }
        };
        self.writable()?;
        for (i, name) in names.iter().enumerate() {
            self.session
                .delete_policy(name)
                .await
                .map_err(|source| PolicyWriteError::Kvstore {
                    source,
                    written: names[..i].to_vec(),
                })?;
        }
        let change = format!("deleted {names:?} from the kvstore");
        self.wait_applied(change, |p| !names.iter().any(|n| p.names.contains(n)))
            .await?;
        Ok(self.state.revision())
    }

    /// Refuses writes while the kvstore is known not to answer, rather than waiting for the
    /// write's own timeout.
    fn writable(&self) -> Result<(), PolicyWriteError> {
        match self.session.stale_since() {
            Some(since) => Err(PolicyWriteError::Stale {
                since: rfc3339(since),
            }),
            None => Ok(()),
        }
    }

    /// Waits until what this node processed satisfies `done`; an error when that set was
    /// refused here, or when it takes longer than [`APPLY_WAIT`].
    async fn wait_applied(
        &self,
        change: String,
        done: impl FnMut(&Processed) -> bool,
    ) -> Result<(), PolicyWriteError> {
        let mut processed = self.processed.clone();
        let outcome = tokio::time::timeout(APPLY_WAIT, processed.wait_for(done)).await;
        match outcome {
            Ok(Ok(processed)) => match &processed.refused {
                Some(reason) => Err(PolicyWriteError::Refused(reason.clone())),
                None => Ok(()),
            },
            Ok(Err(_)) | Err(_) => Err(PolicyWriteError::NotApplied { change }),
        }
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let config = self.session.config();
        let health = self.session.health().borrow().clone();
        let processed = self.processed.borrow().clone();
        let remote = self.remote.borrow().clone();
        ClusterStatus {
            cluster: config.name.clone(),
            node: config.node.clone(),
            stale: health.stale_since.is_some(),
            stale_since: health.stale_since.map(rfc3339),
            stale_seconds: stale_seconds(health.stale_since),
            revision: health.revision,
            policies_revision: processed.revision,
            policies_refused: processed.refused,
            remote_endpoints: remote.endpoints,
            endpoints_refused: remote.refused,
            members: health
                .members
                .iter()
                .map(|m| MemberStatus {
                    name: m.name.clone(),
                    endpoint: m.endpoint.clone(),
                    healthy: m.healthy,
                })
                .collect(),
            nodes: self.nodes(),
            identity_source: match config.identity_source {
                IdentitySource::Axoneme => "axoneme",
                IdentitySource::Cilium => "cilium",
            },
            unidentified_endpoints: self.state.unnumbered_endpoints(),
        }
    }

    /// Every node with a heartbeat or endpoints in the kvstore, by name.
    fn nodes(&self) -> Vec<NodeStatus> {
        let heartbeats = self.session.nodes().borrow().heartbeats.clone();
        let endpoints = self.session.endpoints().borrow().nodes.clone();
        let names: BTreeSet<&String> = heartbeats.keys().chain(endpoints.keys()).collect();
        names
            .into_iter()
            .map(|name| NodeStatus {
                name: name.clone(),
                endpoints: endpoints.get(name).map_or(0, Vec::len),
                last_heartbeat: heartbeats.get(name).copied().map(rfc3339),
            })
            .collect()
    }

    /// Stops following the cluster and revokes this node's lease, so that the other nodes
    /// forget its endpoints and identity references at once. What is enforced here stays.
    pub async fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
        match self.session.close().await {
            Ok(()) => tracing::info!("left the cluster: this node's lease is revoked"),
            Err(error) => tracing::warn!(
                %error,
                "leaving the cluster: the lease cannot be revoked; its keys expire with it"
            ),
        }
    }

    /// The kvstore's health for the metrics.
    pub fn gauges(&self) -> KvstoreGauges {
        let since = self.session.stale_since();
        KvstoreGauges {
            stale: since.is_some(),
            stale_seconds: stale_seconds(since),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Applies every new set of the cluster's policies to the state, skipping sets whose texts
/// did not change (a relist after a reconnection), until the session stops watching.
async fn follow(
    state: Arc<State>,
    mut policies: watch::Receiver<PoliciesSnapshot>,
    mut applied: BTreeMap<String, String>,
    processed: watch::Sender<Processed>,
) {
    while policies.changed().await.is_ok() {
        let snapshot = policies.borrow_and_update().clone();
        let names = snapshot.policies.keys().cloned().collect();
        let refused = if snapshot.policies == applied {
            None
        } else {
            match apply(&state, snapshot.policies.clone()).await {
                Ok(revision) => {
                    tracing::info!(
                        kvstore_revision = snapshot.revision,
                        policies = snapshot.policies.len(),
                        revision,
                        "the cluster's policies applied"
                    );
                    applied = snapshot.policies;
                    None
                }
                Err(error) => {
                    tracing::error!(
                        kvstore_revision = snapshot.revision,
                        %error,
                        "the cluster's policies are refused; the last good policy stays"
                    );
                    Some(format!("{error:#}"))
                }
            }
        };
        processed.send_replace(Processed {
            revision: snapshot.revision,
            names,
            refused,
        });
    }
    tracing::error!("the cluster's policies are no longer followed; the policy in force stays");
}

/// The cluster's identity allocator as the state asks it: each label set a snapshot uses is
/// allocated once and held, and released once no snapshot in force uses it.
struct ClusterNumbers {
    session: Arc<Session>,
    runtime: tokio::runtime::Handle,
    held: std::sync::Mutex<BTreeMap<Vec<String>, u32>>,
}

impl ClusterNumbers {
    /// An allocator for the session, on the current runtime.
    fn new(session: Arc<Session>) -> ClusterNumbers {
        ClusterNumbers {
            session,
            runtime: tokio::runtime::Handle::current(),
            held: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<String>, u32>> {
        // A panic while holding it leaves only whole entries.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives one allocation of `set` back, in the background: the state never waits for the
    /// kvstore to release (the session deletes the reference later if etcd does not answer).
    fn release_later(&self, set: Vec<String>) {
        let session = Arc::clone(&self.session);
        self.runtime.spawn(async move {
            if let Err(error) = session.release_identity(&set).await {
                tracing::warn!(
                    labels = ?set,
                    %error,
                    "an identity no longer used is released, but its reference is not deleted \
                     yet; it will be"
                );
            }
        });
    }
}

impl IdentityNumbers for ClusterNumbers {
    /// The lock on the held sets is never held while the kvstore is asked: a change
    /// allocating new labels does not hold up another change giving its numbers back.
    fn numbers(
        &self,
        sets: &BTreeSet<Vec<String>>,
    ) -> Result<BTreeMap<Vec<String>, u32>, StateError> {
        let mut numbers = BTreeMap::new();
        let missing: Vec<&Vec<String>> = {
            let held = self.held();
            sets.iter()
                .filter(|set| match held.get(*set) {
                    Some(&id) => {
                        numbers.insert((*set).clone(), id);
                        false
                    }
                    None => true,
                })
                .collect()
        };
        for set in missing {
            let allocated = self.runtime.block_on(self.session.allocate_identity(set));
            let id = allocated
                .map_err(|error| StateError::Identities(format!("labels {set:?}: {error}")))?;
            // Another change may have allocated the set meanwhile: one allocation is held per
            // set, and the other given back.
            let first = self.held().insert(set.clone(), id).is_none();
            if !first {
                self.release_later(set.clone());
            }
            numbers.insert(set.clone(), id);
        }
        Ok(numbers)
    }

    fn retain(&self, used: &BTreeSet<Vec<String>>) {
        let unused: Vec<Vec<String>> = {
            let mut held = self.held();
            let unused = held
                .keys()
                .filter(|s| !used.contains(*s))
                .cloned()
                .collect::<Vec<_>>();
            for set in &unused {
                held.remove(set);
            }
            unused
        };
        for set in unused {
            self.release_later(set);
        }
    }
}

/// Cilium's identities as the state asks them (`identitySource: cilium`): read, never
/// allocated. A label set has the number of the Cilium identity with the same labels, their
/// sources left aside (`k8s:app=luke` is `app=luke`); a set Cilium has no identity for, or
/// two, is left out, and its endpoints with it.
struct CiliumNumbers {
    identities: watch::Receiver<IdentitiesSnapshot>,
}

impl IdentityNumbers for CiliumNumbers {
    fn numbers(
        &self,
        sets: &BTreeSet<Vec<String>>,
    ) -> Result<BTreeMap<Vec<String>, u32>, StateError> {
        let mut by_labels: BTreeMap<Vec<String>, Option<u32>> = BTreeMap::new();
        for (id, labels) in self.identities.borrow().identities.iter() {
            if labels.iter().any(|label| !cilium_label_is_plain(label)) {
                continue;
            }
            by_labels
                .entry(sourceless(labels))
                .and_modify(|known| *known = None)
                .or_insert(Some(*id));
        }
        Ok(sets
            .iter()
            .filter_map(|set| {
                let id = by_labels.get(&sourceless(set)).copied().flatten()?;
                Some((set.clone(), id))
            })
            .collect())
    }

    /// Nothing is held: Cilium owns its identities.
    fn retain(&self, _used: &BTreeSet<Vec<String>>) {}
}

/// The label sources that selectors see through (as the policy crate accepts them): other
/// sources (`reserved`, `cidr`, `fqdn`, ...) make identities no endpoint here can have.
const PLAIN_SOURCES: [&str; 4] = ["k8s", "container", "unspec", "any"];

/// Whether a Cilium label (`source:key=value`) has a plain source, or none.
fn cilium_label_is_plain(label: &str) -> bool {
    let key = label.split_once('=').map_or(label, |(key, _)| key);
    key.split_once(':')
        .is_none_or(|(source, _)| PLAIN_SOURCES.contains(&source))
}

/// `key=value` labels with the source of each key dropped, sorted.
fn sourceless(labels: &[String]) -> Vec<String> {
    let mut plain: Vec<String> = labels
        .iter()
        .map(|label| {
            let (key, value) = label.split_once('=').unwrap_or((label, ""));
            let key = key.split_once(':').map_or(key, |(_, key)| key);
            format!("{key}={value}")
        })
        .collect();
    plain.sort_unstable();
    plain.dedup();
    plain
}

/// The namespace label Cilium gives every pod's identity.
const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// The remote endpoints of Cilium's IP cache: each address whose identity Cilium knows, with
/// that identity's labels (the namespace label as the namespace), named `cilium/<ip>`. An
/// address whose identity is unknown here (reserved, or not yet seen) or has labels no
/// endpoint can have stays the world's.
fn cilium_remote(snapshot: &IdentitiesSnapshot) -> Vec<EndpointSpec> {
    snapshot
        .ips
        .iter()
        .filter_map(|(ip, id)| {
            let labels = snapshot.identities.get(id)?;
            let mut spec = EndpointSpec {
                name: format!("cilium/{ip}"),
                ips: vec![*ip],
                labels: BTreeMap::new(),
                namespace: None,
                policy_audit_mode: false,
            };
            for label in labels {
                if !cilium_label_is_plain(label) {
                    return None;
                }
                let (key, value) = label.split_once('=').unwrap_or((label, ""));
                if key.split_once(':').map_or(key, |(_, key)| key) == NAMESPACE_LABEL {
                    spec.namespace = Some(value.to_owned());
                } else {
                    spec.labels.insert(key.to_owned(), value.to_owned());
                }
            }
            // Labels selectors cannot take (a key given twice) leave the address the world's.
            spec.namespace.as_ref()?;
            spec.identity_labels().ok()?;
            Some(spec)
        })
        .collect()
}

/// Applies Cilium's identities and IP cache to the state as they change, until the session
/// stops watching.
async fn follow_cilium(
    state: Arc<State>,
    mut identities: watch::Receiver<IdentitiesSnapshot>,
    view: watch::Sender<RemoteView>,
) {
    while identities.changed().await.is_ok() {
        let snapshot = identities.borrow_and_update().clone();
        apply_cilium(&state, &snapshot, &view).await;
    }
    tracing::error!("Cilium's identities are no longer followed; the last set stays");
}

/// Rebuilds the state with Cilium's identities in `snapshot`: the remote endpoints of its IP
/// cache, and the numbers of this node's endpoints; a set the state refuses is logged, the
/// last good one stays.
async fn apply_cilium(
    state: &Arc<State>,
    snapshot: &IdentitiesSnapshot,
    view: &watch::Sender<RemoteView>,
) {
    let remote = cilium_remote(snapshot);
    let count = remote.len();
    let state = Arc::clone(state);
    let applied = tokio::task::spawn_blocking(move || state.renumber(remote)).await;
    let refused = match applied {
        Ok(Ok(revision)) => {
            tracing::info!(
                kvstore_revision = snapshot.revision,
                identities = snapshot.identities.len(),
                addresses = count,
                revision,
                "Cilium's identities applied"
            );
            view.send_replace(RemoteView {
                endpoints: count,
                refused: None,
            });
            return;
        }
        Ok(Err(error)) => error.to_string(),
        Err(error) => format!("applying them failed: {error}"),
    };
    tracing::error!(
        kvstore_revision = snapshot.revision,
        error = %refused,
        "Cilium's identities are refused; the last good set stays"
    );
    view.send_modify(|view| view.refused = Some(refused));
}

/// Publishes this node's endpoints again whenever the state's change them, until the state is
/// dropped; a publication that fails is tried again until it succeeds or a newer one replaces
/// it. `published` is what the kvstore holds already.
async fn publish(session: Arc<Session>, state: Arc<State>, mut published: Vec<EndpointSpec>) {
    let mut changes = state.subscribe();
    let mut failed = false;
    loop {
        if failed {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(PUBLISH_RETRY) => {}
            }
        } else if changes.changed().await.is_err() {
            return;
        }
        let local = state.endpoints();
        if local == published && !failed {
            continue;
        }
        match session.publish_endpoints(&local).await {
            Ok(()) => {
                tracing::info!(endpoints = local.len(), "this node's endpoints published");
                published = local;
                failed = false;
            }
            Err(error) => {
                if !failed {
                    tracing::warn!(%error, "this node's endpoints cannot be published; retrying");
                }
                failed = true;
            }
        }
    }
}

/// Applies every new set of the other nodes' endpoints to the state, until the session stops
/// watching.
async fn follow_endpoints(
    state: Arc<State>,
    node: String,
    mut endpoints: watch::Receiver<EndpointsSnapshot>,
    view: watch::Sender<RemoteView>,
) {
    while endpoints.changed().await.is_ok() {
        let snapshot = endpoints.borrow_and_update().clone();
        apply_remote(&state, &node, &snapshot, &view).await;
    }
    tracing::error!("the other nodes' endpoints are no longer followed; the last set stays");
}

/// Applies the endpoints of the nodes other than `node` in `snapshot` to the state as remote
/// endpoints named `<node>/<name>`, and says so in `view`; a set the state refuses is logged,
/// the last good one stays.
async fn apply_remote(
    state: &Arc<State>,
    node: &str,
    snapshot: &EndpointsSnapshot,
    view: &watch::Sender<RemoteView>,
) {
    let remote = remote_endpoints(node, snapshot);
    let count = remote.len();
    let state = Arc::clone(state);
    let applied = tokio::task::spawn_blocking(move || state.set_remote_endpoints(remote)).await;
    let refused = match applied {
        Ok(Ok(revision)) => {
            tracing::info!(
                kvstore_revision = snapshot.revision,
                remote_endpoints = count,
                revision,
                "the other nodes' endpoints applied"
            );
            view.send_replace(RemoteView {
                endpoints: count,
                refused: None,
            });
            return;
        }
        Ok(Err(error)) => error.to_string(),
        Err(error) => format!("applying them failed: {error}"),
    };
    tracing::error!(
        kvstore_revision = snapshot.revision,
        error = %refused,
        "the other nodes' endpoints are refused; the last good set stays"
    );
    view.send_modify(|view| view.refused = Some(refused));
}

/// The endpoints of the nodes other than `node`, each named `<its node>/<its name>` so that
/// names never clash between nodes nor with this node's own endpoints.
fn remote_endpoints(node: &str, snapshot: &EndpointsSnapshot) -> Vec<EndpointSpec> {
    snapshot
        .nodes
        .iter()
        .filter(|(other, _)| other.as_str() != node)
        .flat_map(|(other, endpoints)| {
            endpoints.iter().map(move |endpoint| EndpointSpec {
                name: format!("{other}/{}", endpoint.name),
                ..endpoint.clone()
            })
        })
        .collect()
}

/// Applies a set of the cluster's policies on a blocking thread (parsing and compiling can
/// take seconds); the new policy revision.
async fn apply(state: &Arc<State>, texts: BTreeMap<String, String>) -> anyhow::Result<u64> {
    let state = Arc::clone(state);
    let revision =
        tokio::task::spawn_blocking(move || state.set_cluster_policies(&texts)).await??;
    Ok(revision)
}

/// Seconds since `since`, 0 when none.
fn stale_seconds(since: Option<SystemTime>) -> f64 {
    since
        .and_then(|since| since.elapsed().ok())
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// `time` as RFC 3339 in UTC, to the second.
pub fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_rfc3339_utc() {
        let at = |seconds: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        // `date -u -d @951782400` and `@1796497445`.
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_497_445), "2026-12-05T19:04:05Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn cilium_labels_compare_without_their_sources() {
        let cilium: Vec<String> = ["k8s:app=luke", "k8s:io.kubernetes.pod.namespace=default"]
            .map(str::to_owned)
            .to_vec();
        let ours: Vec<String> = ["app=luke", "k8s:io.kubernetes.pod.namespace=default"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(sourceless(&cilium), sourceless(&ours));
        assert_eq!(
            sourceless(&cilium),
            ["app=luke", "io.kubernetes.pod.namespace=default"]
        );
        assert!(cilium_label_is_plain("k8s:app=luke"));
        assert!(cilium_label_is_plain("app=luke"));
        assert!(!cilium_label_is_plain("reserved:host"));
        assert!(!cilium_label_is_plain("cidr:10.0.0.0/8"));
    }

    #[test]
    fn the_ip_cache_becomes_remote_endpoints_of_known_plain_identities() {
        let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
        let labels = |list: &[&str]| list.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
        let snapshot = IdentitiesSnapshot {
            revision: 5,
            identities: Arc::new(BTreeMap::from([
                (
                    31337,
                    labels(&["k8s:app=luke", "k8s:io.kubernetes.pod.namespace=rebels"]),
                ),
                (300, labels(&["cidr:10.0.0.0/8"])),
                (301, labels(&["k8s:app=nobody"])),
                (
                    302,
                    labels(&[
                        "k8s:app=x",
                        "container:app=y",
                        "k8s:io.kubernetes.pod.namespace=d",
                    ]),
                ),
            ])),
            ips: Arc::new(BTreeMap::from([
                (ip("10.0.0.1"), 31337),
                (ip("10.0.0.2"), 300),
                (ip("10.0.0.3"), 301),
                (ip("10.0.0.4"), 302),
                (ip("10.0.0.5"), 2),
            ])),
        };
        let remote = cilium_remote(&snapshot);
        assert_eq!(remote.len(), 1, "{remote:?}");
        assert_eq!(remote[0].name, "cilium/10.0.0.1");
        assert_eq!(remote[0].ips, [ip("10.0.0.1")]);
        assert_eq!(remote[0].namespace.as_deref(), Some("rebels"));
        assert_eq!(
            remote[0].identity_labels().unwrap(),
            ["app=luke", "k8s:io.kubernetes.pod.namespace=rebels"]
        );
        let numbers = CiliumNumbers {
            identities: watch::channel(snapshot).1,
        };
        let sets = BTreeSet::from([
            remote[0].identity_labels().unwrap(),
            labels(&["app=leia", "k8s:io.kubernetes.pod.namespace=rebels"]),
        ]);
        let given = numbers.numbers(&sets).unwrap();
        assert_eq!(
            given,
            BTreeMap::from([(remote[0].identity_labels().unwrap(), 31337)]),
            "leia has no identity: left out"
        );
    }

    #[test]
    fn a_failed_write_names_what_was_written_before_it() {
        let error = PolicyWriteError::Kvstore {
            source: ClusterError::Closed,
            written: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            error.to_string(),
            "the cluster session is closed; the policy in force stays (written before the \
             failure: a, b)"
        );
    }
}
