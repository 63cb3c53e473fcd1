//! The agent's state: endpoints, policies (from files, from the API, and in cluster mode from
//! the kvstore), and the compiled snapshot in force.
//!
//! Every change builds a new snapshot from the whole desired state (the snapshot in force lends
//! it the policies it compiled, and the cluster's policy texts parsed before are not parsed
//! again, so that a change costs what it touches) and either swaps it in with a new revision
//! or leaves everything as it was and returns the error: a bad change never
//! reaches traffic. A change that leaves an endpoint without policy enforcement in a direction
//! (so allowing everything that way) is logged as a warning, and so is every policy warning.
//! Connections read the snapshot without locks.
//!
//! Reading, parsing and compiling policy happen outside the lock that orders changes, so a slow
//! or hostile policy text holds up neither the file watcher nor other imports: the lock is held
//! only to take the state a change starts from and to swap in its result. A change whose starting
//! state was replaced meanwhile is made again on the new one, so that none is lost and revisions
//! follow each other. This module does not watch files, serve the API or run listeners; it is
//! told what changed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arc_swap::ArcSwap;
use axoneme_policy::{
    load_paths, parse_policies, ClusterInputs, EndpointSpec, Policy, PolicyError, Snapshot,
    DEFAULT_MAX_POLICY_BYTES,
};
use axoneme_sdk::{Direction, Registry};
use tokio::sync::watch;

/// How many times a change is made before it holds the lock while it is built (see
/// [`State::change`]).
const ATTEMPTS: u32 = 3;

/// The `source` of the cluster's policies, before `:` and the kvstore key's name.
pub const CLUSTER_SOURCE: &str = "kvstore";

/// What the configuration file contributes.
#[derive(Debug, Clone)]
pub struct ConfigSources {
    /// Addresses of the host identity.
    pub host_ips: Vec<IpAddr>,
    /// Endpoints declared in the configuration.
    pub endpoints: Vec<EndpointSpec>,
    /// Policy files and directories.
    pub policy_paths: Vec<PathBuf>,
    /// The longest policy text accepted, from a file or an import.
    pub max_policy_bytes: usize,
}

impl Default for ConfigSources {
    fn default() -> Self {
        ConfigSources {
            host_ips: Vec::new(),
            endpoints: Vec::new(),
            policy_paths: Vec::new(),
            max_policy_bytes: DEFAULT_MAX_POLICY_BYTES,
        }
    }
}

/// Everything a snapshot is built from.
#[derive(Debug, Clone, Default)]
struct Desired {
    config: ConfigSources,
    file_policies: Vec<Policy>,
    /// Endpoints put through the API, by name; they win over configured ones of the same name.
    api_endpoints: BTreeMap<String, EndpointSpec>,
    /// Endpoints deleted through the API although the configuration declares them.
    deleted_endpoints: Vec<String>,
    /// Policies imported through the API, by name (none in cluster mode, where imports go to
    /// the kvstore).
    api_policies: BTreeMap<String, Policy>,
    /// The cluster's policies from the kvstore, by name (cluster mode only).
    cluster_policies: BTreeMap<String, Policy>,
    /// The endpoints other nodes host, named `<node>/<name>` (cluster mode only): remote
    /// identities, never guarded here. Shared between the states a change starts from and
    /// makes, which copy it only when they change it.
    remote_endpoints: Arc<Vec<EndpointSpec>>,
}

impl Desired {
    fn endpoints(&self) -> Vec<EndpointSpec> {
        let mut endpoints: BTreeMap<&str, &EndpointSpec> = BTreeMap::new();
        for endpoint in &self.config.endpoints {
            if !self.deleted_endpoints.contains(&endpoint.name) {
                endpoints.insert(&endpoint.name, endpoint);
            }
        }
        for (name, endpoint) in &self.api_endpoints {
            endpoints.insert(name, endpoint);
        }
        endpoints.into_values().cloned().collect()
    }

    fn policies(&self) -> Vec<Policy> {
        self.file_policies
            .iter()
            .chain(self.api_policies.values())
            .chain(self.cluster_policies.values())
            .cloned()
            .collect()
    }
}

/// A change that was refused; the state is as it was.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The resulting policy would be invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// No policy has that name.
    #[error("no policy is named {0:?}")]
    PolicyNotFound(String),
    /// The policy is defined in a file, which the API does not change.
    #[error("policy {name:?} is defined in {file}; change that file instead")]
    PolicyInFile {
        /// The policy.
        name: String,
        /// Its file.
        file: String,
    },
    /// No endpoint has that name.
    #[error("no endpoint is named {0:?}")]
    EndpointNotFound(String),
    /// The request itself is unusable.
    #[error("{0}")]
    Invalid(String),
    /// The cluster's identity numbers could not be had (cluster mode): the kvstore did not
    /// answer or refused the labels.
    #[error("identity numbers from the kvstore: {0}")]
    Identities(String),
}

/// Where identity numbers come from in cluster mode: the cluster's allocator, so that the same
/// labels have the same number on every node, or Cilium's identities. Asked from the blocking
/// thread a change runs on.
pub trait IdentityNumbers: Send + Sync {
    /// The cluster's number of each label set of `sets`, allocating those not held yet. A set
    /// left out of the answer has no number (Cilium has no identity for it): the endpoints
    /// with those labels are left out of the snapshot, so a listener guarding one refuses its
    /// traffic and a remote address of one is the world's.
    fn numbers(
        &self,
        sets: &BTreeSet<Vec<String>>,
    ) -> Result<BTreeMap<Vec<String>, u32>, StateError>;

    /// Gives back the label sets held that are not in `used`, once a snapshot without them is
    /// in force.
    fn retain(&self, used: &BTreeSet<Vec<String>>);
}

/// Where imported policies are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImportTarget {
    /// This agent's own store of imported policies.
    Api,
    /// The cluster's policies (cluster mode): the import is only checked here, as if the
    /// cluster's policies were changed, and written to the kvstore by the caller.
    Cluster,
}

impl ImportTarget {
    fn policies(self, desired: &mut Desired) -> &mut BTreeMap<String, Policy> {
        match self {
            ImportTarget::Api => &mut desired.api_policies,
            ImportTarget::Cluster => &mut desired.cluster_policies,
        }
    }
}

/// A policy import checked against the state in force, to be written to the kvstore.
#[derive(Debug, Clone)]
pub struct CheckedImport {
    /// The imported policies.
    pub policies: Vec<Policy>,
    /// What the imported policies contain that their authors should know about.
    pub warnings: Vec<String>,
}

/// The result of a policy import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The policy revision in force after the import (unchanged when only validating).
    pub revision: u64,
    /// The names of the imported policies.
    pub names: Vec<String>,
    /// What the imported policies contain that their authors should know about.
    pub warnings: Vec<String>,
}

/// One text of policies to import, with the name its errors and warnings give it (a file
/// name, or `<api>`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyText {
    /// The name of the text in messages, and the `source` of its policies.
    pub source: String,
    /// The policies: YAML or JSON, one or more documents.
    pub text: String,
}

/// The shared state of a running agent.
pub struct State {
    registry: Registry,
    desired: Mutex<Desired>,
    current: ArcSwap<Snapshot>,
    /// Mirror of `current`'s revision, for a cheap per-request "has policy changed?" check.
    revision: AtomicU64,
    /// Announces each new revision, for what follows the state (the redirect rules).
    changes: watch::Sender<u64>,
    import_errors: AtomicU64,
    /// The cluster's identity numbers, in cluster mode; local numbers without.
    numbers: OnceLock<Arc<dyn IdentityNumbers>>,
    /// This node's endpoints left out of the snapshot in force because their labels have no
    /// number.
    unnumbered: Mutex<BTreeSet<String>>,
    /// The cluster's policy texts last parsed, by name, with their policies: a text that
    /// comes back unchanged from the kvstore is not parsed again.
    cluster_texts: Mutex<BTreeMap<String, ParsedText>>,
}

/// A policy text and what it parsed into.
struct ParsedText {
    text: String,
    policies: Vec<Policy>,
}

impl State {
    /// Loads the configured policy files and builds the first snapshot; an error means the
    /// agent cannot start.
    pub fn new(registry: Registry, config: ConfigSources) -> Result<State, StateError> {
        let file_policies = load_paths(&config.policy_paths, config.max_policy_bytes)?;
        log_warnings(&warnings_of(&file_policies));
        let desired = Desired {
            config,
            file_policies,
            ..Desired::default()
        };
        let snapshot = build(&registry, &desired, None, None)?;
        let revision = AtomicU64::new(snapshot.revision());
        Ok(State {
            registry,
            desired: Mutex::new(desired),
            changes: watch::Sender::new(snapshot.revision()),
            current: ArcSwap::from_pointee(snapshot),
            revision,
            import_errors: AtomicU64::new(0),
            numbers: OnceLock::new(),
            unnumbered: Mutex::new(BTreeSet::new()),
            cluster_texts: Mutex::new(BTreeMap::new()),
        })
    }

    /// Takes identity numbers from `numbers` from now on (cluster mode), and rebuilds the
    /// snapshot with them; on an error the state stays as it was, numbered locally. Blocks
    /// while the numbers are allocated: call it from a blocking thread.
    pub fn use_identity_numbers(
        &self,
        numbers: Arc<dyn IdentityNumbers>,
    ) -> Result<u64, StateError> {
        if self.numbers.set(numbers).is_err() {
            return Err(StateError::Invalid(
                "identity numbers already come from elsewhere".to_owned(),
            ));
        }
        self.change(|base| Ok(base.clone()))
    }

    /// The cluster's numbers of the label sets of `desired`'s endpoints (local and remote),
    /// in cluster mode.
    fn numbers_for(
        &self,
        desired: &Desired,
    ) -> Result<Option<BTreeMap<Vec<String>, u32>>, StateError> {
        let Some(numbers) = self.numbers.get() else {
            return Ok(None);
        };
        let mut sets = BTreeSet::new();
        for endpoint in desired
            .endpoints()
            .iter()
            .chain(desired.remote_endpoints.iter())
        {
            sets.insert(endpoint.identity_labels()?);
        }
        numbers.numbers(&sets).map(Some)
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The revision of the snapshot in force.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Sees every revision swapped in from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Changes refused because the resulting policy was invalid.
    pub fn import_errors(&self) -> u64 {
        self.import_errors.load(Ordering::Relaxed)
    }

    /// The protocols known to this agent.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every policy in force: those from files, then those imported through the API, then
    /// the cluster's.
    pub fn policies(&self) -> Vec<Policy> {
        self.lock().policies()
    }

    /// Every endpoint.
    pub fn endpoints(&self) -> Vec<EndpointSpec> {
        self.lock().endpoints()
    }

    /// The endpoints other nodes host (cluster mode), named `<node>/<name>`.
    pub fn remote_endpoints(&self) -> Vec<EndpointSpec> {
        self.lock().remote_endpoints.to_vec()
    }

    /// Imports the policies in `texts`, all or none, replacing imported policies of the same
    /// names. With `validate_only`, checks everything and changes nothing. The texts are parsed
    /// before the state is locked.
    pub fn import(
        &self,
        texts: &[PolicyText],
        validate_only: bool,
    ) -> Result<Imported, StateError> {
        let (policies, warnings) = self.parse_import(texts)?;
        let names: Vec<String> = policies.iter().map(|p| p.name().to_owned()).collect();
        let with_imports =
            |base: &Desired| with_imports(base, &policies, ImportTarget::Api, Replacing::SameScope);
        let revision = if validate_only {
            let (base, previous) = self.base();
            let candidate = with_imports(&base)?;
            let numbers = self.numbers_for(&candidate)?;
            build(
                &self.registry,
                &candidate,
                Some(&previous),
                numbers.as_ref(),
            )
            .inspect_err(|_| self.count_import_error())?;
            previous.revision()
        } else {
            let revision = self.change(with_imports)?;
            for warning in &warnings {
                tracing::warn!(%warning, "imported policy");
            }
            revision
        };
        Ok(Imported {
            revision,
            names,
            warnings,
        })
    }

    /// Checks an import into the cluster's policies (cluster mode) as [`State::import`] with
    /// `validate_only` would, and returns the parsed policies for the caller to write to the
    /// kvstore; nothing changes here until they come back from it.
    pub fn check_cluster_import(&self, texts: &[PolicyText]) -> Result<CheckedImport, StateError> {
        let (policies, warnings) = self.parse_import(texts)?;
        let (base, previous) = self.base();
        let candidate = with_imports(
            &base,
            &policies,
            ImportTarget::Cluster,
            Replacing::SameScope,
        )?;
        let numbers = self.numbers_for(&candidate)?;
        build(
            &self.registry,
            &candidate,
            Some(&previous),
            numbers.as_ref(),
        )
        .inspect_err(|_| self.count_import_error())?;
        Ok(CheckedImport { policies, warnings })
    }

    /// Replaces the cluster's policies (cluster mode) with `texts`, policy name → text as the
    /// kvstore holds them, all or none: a text that does not parse, or a set that does not
    /// compile, leaves the state as it was.
    pub fn set_cluster_policies(
        &self,
        texts: &BTreeMap<String, String>,
    ) -> Result<u64, StateError> {
        let policies = self
            .parse_cluster_texts(texts)
            .inspect_err(|_| self.count_import_error())?;
        let names: HashSet<&str> = policies.iter().map(Policy::name).collect();
        let revision = self.change(|base| {
            // The kvstore holds the cluster's policies by name: its set replaces ours whole.
            let mut candidate =
                with_imports(base, &policies, ImportTarget::Cluster, Replacing::Any)?;
            candidate
                .cluster_policies
                .retain(|name, _| names.contains(name.as_str()));
            Ok(candidate)
        })?;
        log_warnings(&warnings_of(&policies));
        Ok(revision)
    }

    /// The policies of the cluster's `texts`, policy name → text; only the texts that differ
    /// from those parsed last time are parsed.
    fn parse_cluster_texts(
        &self,
        texts: &BTreeMap<String, String>,
    ) -> Result<Vec<Policy>, PolicyError> {
        let limit = self.lock().config.max_policy_bytes;
        let mut cache = self.cluster_texts.lock().unwrap_or_else(|p| p.into_inner());
        let mut parsed = BTreeMap::new();
        let mut policies = Vec::new();
        for (name, text) in texts {
            let known = cache
                .remove(name)
                .filter(|known| known.text == *text && text.len() <= limit);
            let entry = match known {
                Some(known) => known,
                None => {
                    let text = PolicyText {
                        source: format!("{CLUSTER_SOURCE}:{name}"),
                        text: text.clone(),
                    };
                    ParsedText {
                        policies: parse_text(&text, limit)?,
                        text: text.text,
                    }
                }
            };
            policies.extend(entry.policies.iter().cloned());
            parsed.insert(name.clone(), entry);
        }
        *cache = parsed;
        Ok(policies)
    }

    /// The parsed policies of an import, and their warnings; an import without any is refused.
    fn parse_import(&self, texts: &[PolicyText]) -> Result<(Vec<Policy>, Vec<String>), StateError> {
        let policies = self
            .parse(texts)
            .inspect_err(|_| self.count_import_error())?;
        if policies.is_empty() {
            return Err(StateError::Invalid("no policy in the request".into()));
        }
        let warnings = warnings_of(&policies);
        Ok((policies, warnings))
    }

    /// The policies of `texts`, each refused unparsed when longer than the configured limit.
    fn parse(&self, texts: &[PolicyText]) -> Result<Vec<Policy>, PolicyError> {
        let limit = self.lock().config.max_policy_bytes;
        let mut policies = Vec::new();
        for text in texts {
            policies.extend(parse_text(text, limit)?);
        }
        Ok(policies)
    }

    /// Deletes the imported policy `name`, or every imported policy when `None`.
    pub fn delete_policy(&self, name: Option<&str>) -> Result<u64, StateError> {
        self.change(|base| {
            let mut candidate = base.clone();
            match name {
                None => candidate.api_policies.clear(),
                Some(name) => {
                    if candidate.api_policies.remove(name).is_none() {
                        return Err(match base.file_policies.iter().find(|p| p.name() == name) {
                            Some(p) => StateError::PolicyInFile {
                                name: name.into(),
                                file: p.source().into(),
                            },
                            None => StateError::PolicyNotFound(name.into()),
                        });
                    }
                }
            }
            Ok(candidate)
        })
    }

    /// Replaces the endpoints other nodes host (cluster mode), named `<node>/<name>`, all or
    /// none: a set that does not build (two of them claiming one address) leaves the state as
    /// it was. Unchanged sets change nothing and keep the revision.
    pub fn set_remote_endpoints(&self, remote: Vec<EndpointSpec>) -> Result<u64, StateError> {
        if *self.lock().remote_endpoints == remote {
            return Ok(self.revision());
        }
        let remote = Arc::new(remote);
        self.change(|base| {
            let mut candidate = base.clone();
            candidate.remote_endpoints = Arc::clone(&remote);
            Ok(candidate)
        })
    }

    /// Replaces the endpoints other nodes host and builds a new snapshot even when they are
    /// unchanged: the identity numbers changed (with Cilium's identities, which the state
    /// does not see change).
    pub fn renumber(&self, remote: Vec<EndpointSpec>) -> Result<u64, StateError> {
        let remote = Arc::new(remote);
        self.change(|base| {
            let mut candidate = base.clone();
            candidate.remote_endpoints = Arc::clone(&remote);
            Ok(candidate)
        })
    }

    /// This node's endpoints left out of the snapshot in force because the cluster has no
    /// identity number for their labels; their traffic is refused.
    pub fn unnumbered_endpoints(&self) -> Vec<String> {
        self.unnumbered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Creates or replaces an endpoint.
    pub fn put_endpoint(&self, endpoint: EndpointSpec) -> Result<u64, StateError> {
        self.change(|base| {
            let mut candidate = base.clone();
            candidate.deleted_endpoints.retain(|n| *n != endpoint.name);
            candidate
                .api_endpoints
                .insert(endpoint.name.clone(), endpoint.clone());
            Ok(candidate)
        })
    }

    /// Deletes an endpoint.
    pub fn delete_endpoint(&self, name: &str) -> Result<u64, StateError> {
        self.change(|base| {
            if !base.endpoints().iter().any(|e| e.name == name) {
                return Err(StateError::EndpointNotFound(name.into()));
            }
            let mut candidate = base.clone();
            candidate.api_endpoints.remove(name);
            if candidate.config.endpoints.iter().any(|e| e.name == name) {
                candidate.deleted_endpoints.push(name.into());
            }
            Ok(candidate)
        })
    }

    /// Re-reads the policy files (after one of them changed).
    pub fn reload_files(&self) -> Result<u64, StateError> {
        let mut warnings = Vec::new();
        let revision = self.change(|base| {
            let mut candidate = base.clone();
            candidate.file_policies = self.load(&base.config, &mut warnings)?;
            Ok(candidate)
        })?;
        log_warnings(&warnings);
        Ok(revision)
    }

    /// Takes what a changed configuration file says about endpoints, host addresses, policy
    /// files and the policy size limit; what was changed through the API stays.
    pub fn set_config(&self, config: ConfigSources) -> Result<u64, StateError> {
        let mut warnings = Vec::new();
        let revision = self.change(|base| {
            let mut candidate = base.clone();
            candidate.file_policies = self.load(&config, &mut warnings)?;
            candidate.config = config.clone();
            Ok(candidate)
        })?;
        log_warnings(&warnings);
        Ok(revision)
    }

    /// Loads the policy files `config` names, keeping their warnings in `warnings`.
    fn load(
        &self,
        config: &ConfigSources,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<Policy>, StateError> {
        let policies = load_paths(&config.policy_paths, config.max_policy_bytes)
            .inspect_err(|_| self.count_import_error())?;
        *warnings = warnings_of(&policies);
        Ok(policies)
    }

    /// The desired state and the snapshot built from it, taken together.
    fn base(&self) -> (Desired, Arc<Snapshot>) {
        let desired = self.lock();
        (desired.clone(), self.snapshot())
    }

    /// Makes the desired state `edit` derives from the current one, builds its snapshot and
    /// swaps it in, or returns why not. Only taking the current state and the swap hold the lock;
    /// when another change was swapped in while `edit` and the build ran, they run again on that
    /// change's state. The last of [`ATTEMPTS`] holds the lock throughout, so that a slow change
    /// is not overtaken forever.
    fn change(
        &self,
        mut edit: impl FnMut(&Desired) -> Result<Desired, StateError>,
    ) -> Result<u64, StateError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let held = self.lock();
            let (base, previous) = (held.clone(), self.snapshot());
            let held = (attempt >= ATTEMPTS).then_some(held);
            let candidate = edit(&base)?;
            drop(base);
            let numbers = self.numbers_for(&candidate)?;
            let snapshot = build(
                &self.registry,
                &candidate,
                Some(&previous),
                numbers.as_ref(),
            )
            .inspect_err(|_| self.count_import_error())?;
            let mut desired = held.unwrap_or_else(|| self.lock());
            if self.revision() != previous.revision() {
                continue;
            }
            let revision = snapshot.revision();
            let names: Vec<String> = candidate.endpoints().into_iter().map(|e| e.name).collect();
            for (endpoint, direction) in lost_enforcement(&previous, &snapshot, &names) {
                tracing::warn!(
                    endpoint,
                    direction,
                    revision,
                    "no policy selects the endpoint in this direction any more: all its \
                     {direction} traffic is allowed"
                );
            }
            self.note_unnumbered(&candidate, numbers.as_ref(), revision);
            *desired = candidate;
            self.current.store(Arc::new(snapshot));
            self.revision.store(revision, Ordering::Release);
            self.changes.send_replace(revision);
            // Still holding the lock: a change that starts after this one sees its numbers
            // given back, and allocates again what it needs.
            if let (Some(source), Some(numbers)) = (self.numbers.get(), numbers) {
                source.retain(&numbers.into_keys().collect());
            }
            drop(desired);
            return Ok(revision);
        }
    }

    /// Records which of `desired`'s endpoints `numbers` leaves without a number, and logs
    /// those that change.
    fn note_unnumbered(
        &self,
        desired: &Desired,
        numbers: Option<&BTreeMap<Vec<String>, u32>>,
        revision: u64,
    ) {
        let now: BTreeSet<String> = numbers
            .map(|numbers| {
                desired
                    .endpoints()
                    .into_iter()
                    .filter(|e| !is_numbered(e, numbers))
                    .map(|e| e.name)
                    .collect()
            })
            .unwrap_or_default();
        let mut unnumbered = self.unnumbered.lock().unwrap_or_else(|p| p.into_inner());
        for name in now.difference(&unnumbered) {
            tracing::error!(
                endpoint = %name,
                revision,
                "the cluster has no identity for the endpoint's labels: it is left out of \
                 policy and its traffic is refused"
            );
        }
        for name in unnumbered.difference(&now) {
            tracing::info!(endpoint = %name, revision, "the endpoint's labels have an identity again");
        }
        *unnumbered = now;
    }

    fn count_import_error(&self) {
        self.import_errors.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Desired> {
        // A panic while holding the lock leaves a consistent `Desired` (it is replaced whole).
        self.desired
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The policies of `text`, refused unparsed when it is longer than `limit`.
fn parse_text(text: &PolicyText, limit: usize) -> Result<Vec<Policy>, PolicyError> {
    if text.text.len() > limit {
        return Err(PolicyError::TooLarge {
            file: text.source.clone(),
            size: text.text.len() as u64,
            limit,
        });
    }
    parse_policies(&text.source, &text.text)
}

/// Which held policies an imported one of the same name may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replacing {
    /// Only one of the same kind and namespace: another is a different policy to Cilium.
    SameScope,
    /// Any: the import is the authoritative set of those names.
    Any,
}

/// `base` with `policies` added to `target`, replacing those of the same names as `replacing`
/// allows; refused when one has the name of a policy from a file, or when two of `policies`
/// share a name.
fn with_imports(
    base: &Desired,
    policies: &[Policy],
    target: ImportTarget,
    replacing: Replacing,
) -> Result<Desired, StateError> {
    if let Some(clash) = base
        .file_policies
        .iter()
        .find(|p| policies.iter().any(|n| n.name() == p.name()))
    {
        return Err(StateError::PolicyInFile {
            name: clash.name().into(),
            file: clash.source().into(),
        });
    }
    for (index, policy) in policies.iter().enumerate() {
        if let Some(twin) = policies[..index].iter().find(|p| p.name() == policy.name()) {
            return Err(StateError::Invalid(format!(
                "the import names two policies {:?} ({} and {}); imported policies are told \
                 apart by name",
                policy.name(),
                scope_of(twin),
                scope_of(policy)
            )));
        }
    }
    let mut candidate = base.clone();
    let store = target.policies(&mut candidate);
    for policy in policies {
        if let Some(held) = store
            .get(policy.name())
            .filter(|_| replacing == Replacing::SameScope)
        {
            if held.kind() != policy.kind() || held.namespace() != policy.namespace() {
                return Err(StateError::Invalid(format!(
                    "{} cannot be imported: the imported {} has that name (imported policies \
                     are told apart by name; delete it first)",
                    scope_of(policy),
                    scope_of(held)
                )));
            }
        }
        store.insert(policy.name().to_owned(), policy.clone());
    }
    Ok(candidate)
}

/// A policy as Cilium tells it apart: its kind, namespace and name.
fn scope_of(policy: &Policy) -> String {
    match policy.namespace() {
        Some(namespace) => format!("{} {namespace}/{}", policy.kind().as_str(), policy.name()),
        None => format!("{} {}", policy.kind().as_str(), policy.name()),
    }
}

/// What `policies` contain that their authors should know about.
fn warnings_of(policies: &[Policy]) -> Vec<String> {
    policies
        .iter()
        .flat_map(|p| p.warnings())
        .map(ToString::to_string)
        .collect()
}

/// Logs the warnings of policies read from files.
fn log_warnings(warnings: &[String]) {
    for warning in warnings {
        tracing::warn!(%warning, "policy file");
    }
}

/// The endpoints (of `names`) and directions where `before` enforced policy and `after` does
/// not: they went back to allowing everything.
fn lost_enforcement(
    before: &Snapshot,
    after: &Snapshot,
    names: &[String],
) -> Vec<(String, &'static str)> {
    let mut lost = Vec::new();
    for name in names {
        for (direction, word) in [
            (Direction::Ingress, "ingress"),
            (Direction::Egress, "egress"),
        ] {
            if before.enforced(name, direction) == Some(true)
                && after.enforced(name, direction) == Some(false)
            {
                lost.push((name.clone(), word));
            }
        }
    }
    lost
}

/// Whether `numbers` has a number for the labels of `endpoint` (an endpoint whose labels
/// are invalid counts as numbered: the build says what is wrong with it).
fn is_numbered(endpoint: &EndpointSpec, numbers: &BTreeMap<Vec<String>, u32>) -> bool {
    endpoint
        .identity_labels()
        .map_or(true, |labels| numbers.contains_key(&labels))
}

/// The snapshot of `desired`, numbering identities with the cluster's `numbers` when given;
/// the endpoints whose labels `numbers` leaves out are left out of it.
fn build(
    registry: &Registry,
    desired: &Desired,
    previous: Option<&Snapshot>,
    numbers: Option<&BTreeMap<Vec<String>, u32>>,
) -> Result<Snapshot, PolicyError> {
    let mut local = desired.endpoints();
    let all_remote = desired.remote_endpoints.as_slice();
    let numbered_remote: Vec<EndpointSpec>;
    let mut remote = all_remote;
    if let Some(numbers) = numbers {
        local.retain(|e| is_numbered(e, numbers));
        if !all_remote.iter().all(|e| is_numbered(e, numbers)) {
            numbered_remote = all_remote
                .iter()
                .filter(|e| is_numbered(e, numbers))
                .cloned()
                .collect();
            remote = &numbered_remote;
        }
    }
    let cluster = ClusterInputs { remote, numbers };
    Snapshot::build_in_cluster(
        desired.policies(),
        &local,
        cluster,
        &desired.config.host_ips,
        registry,
        previous,
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::builtin_protocols;
    use crate::config::ProtocolsConfig;

    /// Log lines written while running `f`.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let result = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&lines.0.lock().unwrap_or_else(|p| p.into_inner()))
            .into_owned();
        (result, text)
    }

    fn endpoint(name: &str, ip: &str, app: &str) -> EndpointSpec {
        EndpointSpec {
            name: name.into(),
            ips: vec![ip.parse().unwrap()],
            labels: [("app".to_owned(), app.to_owned())].into(),
            namespace: None,
            policy_audit_mode: false,
        }
    }

    fn state() -> State {
        let config = ConfigSources {
            endpoints: vec![endpoint("r2d2", "10.0.0.1", "r2d2")],
            ..ConfigSources::default()
        };
        State::new(builtin_protocols(&ProtocolsConfig::default()), config).unwrap()
    }

    fn text(source: &str, text: &str) -> Vec<PolicyText> {
        vec![PolicyText {
            source: source.into(),
            text: text.into(),
        }]
    }

    const GUARD: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: guard}\nspec:\n  endpointSelector: {matchLabels: {app: r2d2}}\n  ingress:\n  - toPorts:\n    - ports: [{port: '4001'}]\n      rules: {l7proto: r2d2, l7: [{cmd: READ, file: ''}]}\n";

    #[test]
    fn imports_return_and_log_warnings() {
        let state = state();
        let (imported, log) = logged(|| state.import(&text("guard.yaml", GUARD), false).unwrap());
        assert_eq!(imported.names, ["guard"]);
        assert_eq!(
            imported.warnings,
            ["guard.yaml: policy \"guard\": spec.ingress[0].toPorts[0].rules.l7[0].file: the empty value puts no constraint on file (as in Cilium)"]
        );
        assert!(
            log.contains("WARN") && log.contains("no constraint on file"),
            "{log}"
        );
        let validated = state.import(&text("guard.yaml", GUARD), true).unwrap();
        assert_eq!(validated.warnings.len(), 1);
    }

    /// `GUARD` under another name.
    fn guard_named(name: &str) -> String {
        GUARD.replace("{name: guard}", &format!("{{name: {name}}}"))
    }

    /// Cilium tells policies apart by kind, namespace and name, so `default/guard` and
    /// `prod/guard` are two policies there. Imported policies are stored by name: a policy of
    /// another namespace or kind must not replace one of the same name (the endpoints the
    /// first selected would silently lose its rules, and with them their enforcement), and two
    /// policies of one import must not share a name (one would be dropped).
    #[test]
    fn an_import_never_replaces_a_policy_of_another_namespace_or_kind() {
        let state = state();
        state.import(&text("guard.yaml", GUARD), false).unwrap();
        let enforced = |state: &State| state.snapshot().enforced("r2d2", Direction::Ingress);
        assert_eq!(enforced(&state), Some(true));
        let in_prod = GUARD.replace("{name: guard}", "{name: guard, namespace: prod}");
        let clusterwide = GUARD.replace(
            "kind: CiliumNetworkPolicy",
            "kind: CiliumClusterwideNetworkPolicy",
        );
        for (other, scope) in [
            (&in_prod, "CiliumNetworkPolicy prod/guard"),
            (&clusterwide, "CiliumClusterwideNetworkPolicy guard"),
        ] {
            for validate_only in [true, false] {
                let error = state
                    .import(&text("other.yaml", other), validate_only)
                    .unwrap_err()
                    .to_string();
                assert_eq!(
                    error,
                    format!(
                        "{scope} cannot be imported: the imported CiliumNetworkPolicy \
                         default/guard has that name (imported policies are told apart by \
                         name; delete it first)"
                    )
                );
            }
            assert_eq!(enforced(&state), Some(true));
        }
        let both = format!("{GUARD}---\n{in_prod}");
        let error = state.import(&text("both.yaml", &both), false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the import names two policies \"guard\" (CiliumNetworkPolicy default/guard and \
             CiliumNetworkPolicy prod/guard); imported policies are told apart by name"
        );
        let twice = format!("{}---\n{}", guard_named("twin"), guard_named("twin"));
        assert_eq!(
            state
                .import(&text("twice.yaml", &twice), false)
                .unwrap_err()
                .to_string(),
            "the import names two policies \"twin\" (CiliumNetworkPolicy default/twin and \
             CiliumNetworkPolicy default/twin); imported policies are told apart by name"
        );
        assert_eq!(state.policies().len(), 1);
        let replaced = GUARD.replace("cmd: READ", "cmd: HALT");
        state.import(&text("guard.yaml", &replaced), false).unwrap();
        assert_eq!(state.policies().len(), 1);
        assert_eq!(enforced(&state), Some(true));
    }

    #[test]
    fn a_slow_import_holds_up_no_other_change() {
        let state = Arc::new(state());
        let rules = "{cmd: HALT}, ".repeat(60_000);
        let large = guard_named("large").replace("[{cmd: READ, file: ''}]", &format!("[{rules}]"));
        let importer = Arc::clone(&state);
        let large = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let imported = importer.import(&text("large.yaml", &large), false).unwrap();
            (imported.revision, started.elapsed())
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let small = state
            .import(&text("small.yaml", &guard_named("small")), false)
            .unwrap();
        let (large_revision, large_took) = large.join().unwrap();
        assert!(
            large_took > std::time::Duration::from_millis(200),
            "the large import must be slow for this test to mean something: {large_took:?}"
        );
        assert_eq!(
            (small.revision, large_revision),
            (2, 3),
            "the small import went through while the large one was being parsed"
        );
        assert_eq!(state.policies().len(), 2);
    }

    #[test]
    fn concurrent_changes_are_all_kept_with_consecutive_revisions() {
        let state = Arc::new(state());
        let importers: Vec<_> = (0..8)
            .map(|i| {
                let state = Arc::clone(&state);
                std::thread::spawn(move || {
                    let policy = guard_named(&format!("p{i}"));
                    state
                        .import(&text("p.yaml", &policy), false)
                        .unwrap()
                        .revision
                })
            })
            .collect();
        let mut revisions: Vec<u64> = importers.into_iter().map(|t| t.join().unwrap()).collect();
        revisions.sort_unstable();
        assert_eq!(revisions, (2..10).collect::<Vec<u64>>());
        assert_eq!(state.revision(), 9);
        assert_eq!(state.snapshot().revision(), 9);
        assert_eq!(state.policies().len(), 8);
    }

    #[test]
    fn a_change_overtaken_again_and_again_holds_the_lock_at_its_last_attempt() {
        let state = Arc::new(state());
        let mut edits = 0;
        let revision = state
            .change(|base| {
                edits += 1;
                // Whenever the lock is free, another change overtakes this one.
                if state.desired.try_lock().is_ok() {
                    let other = Arc::clone(&state);
                    let (name, ip) = (format!("other{edits}"), format!("10.0.1.{edits}"));
                    std::thread::spawn(move || other.put_endpoint(endpoint(&name, &ip, "x")))
                        .join()
                        .unwrap()
                        .unwrap();
                }
                Ok(base.clone())
            })
            .unwrap();
        assert_eq!(edits, ATTEMPTS);
        assert_eq!(
            revision,
            1 + u64::from(ATTEMPTS),
            "one overtaker per attempt but the last, then this change"
        );
        assert_eq!(
            state.endpoints().len(),
            ATTEMPTS as usize,
            "r2d2 and the overtakers"
        );
    }

    #[test]
    fn texts_over_the_size_limit_are_refused_unparsed() {
        let config = ConfigSources {
            endpoints: vec![endpoint("r2d2", "10.0.0.1", "r2d2")],
            max_policy_bytes: GUARD.len() - 1,
            ..ConfigSources::default()
        };
        let state = State::new(builtin_protocols(&ProtocolsConfig::default()), config).unwrap();
        let error = state.import(&text("guard.yaml", GUARD), false).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "guard.yaml: {} bytes, more than the {} bytes policy text may have \
                 (maxPolicyBytes)",
                GUARD.len(),
                GUARD.len() - 1
            )
        );
        assert_eq!((state.revision(), state.import_errors()), (1, 1));
    }

    #[test]
    fn an_empty_import_is_refused() {
        let state = state();
        let error = state
            .import(&text("<api>", "# nothing\n"), false)
            .unwrap_err();
        assert!(
            error.to_string().starts_with("<api>: holds no policy"),
            "{error}"
        );
        assert_eq!(state.revision(), 1);
    }

    #[test]
    fn losing_enforcement_is_a_warning() {
        let state = state();
        state.import(&text("guard.yaml", GUARD), false).unwrap();
        let snapshot = state.snapshot();
        assert_eq!(snapshot.enforced("r2d2", Direction::Ingress), Some(true));
        let (_, log) = logged(|| {
            state
                .put_endpoint(endpoint("r2d2", "10.0.0.1", "renamed"))
                .unwrap()
        });
        assert!(
            log.contains("WARN")
                && log.contains("endpoint=\"r2d2\"")
                && log.contains("direction=\"ingress\"")
                && log.contains("all its ingress traffic is allowed"),
            "{log}"
        );
        assert!(!log.contains("egress"), "egress was never enforced: {log}");
        state
            .put_endpoint(endpoint("r2d2", "10.0.0.1", "r2d2"))
            .unwrap();
        let (_, log) = logged(|| state.delete_policy(Some("guard")).unwrap());
        assert!(log.contains("all its ingress traffic is allowed"), "{log}");
        let (_, log) = logged(|| state.delete_policy(None).unwrap());
        assert!(log.is_empty(), "nothing was enforced: {log}");
    }

    #[test]
    fn the_cluster_policies_are_replaced_as_a_set_or_not_at_all() {
        let state = state();
        let set = |names: &[&str]| -> BTreeMap<String, String> {
            names
                .iter()
                .map(|n| ((*n).to_owned(), guard_named(n)))
                .collect()
        };
        assert_eq!(state.set_cluster_policies(&set(&["a", "b"])).unwrap(), 2);
        let sources: Vec<(String, String)> = state
            .policies()
            .iter()
            .map(|p| (p.name().to_owned(), p.source().to_owned()))
            .collect();
        assert_eq!(
            sources,
            [
                ("a".to_owned(), "kvstore:a".to_owned()),
                ("b".to_owned(), "kvstore:b".to_owned())
            ]
        );
        assert_eq!(state.set_cluster_policies(&set(&["b"])).unwrap(), 3);
        assert_eq!(state.policies().len(), 1, "a is gone from the cluster");

        let mut bad = set(&["b", "c"]);
        bad.insert("d".into(), "kind: [unclosed\n".into());
        let error = state.set_cluster_policies(&bad).unwrap_err().to_string();
        assert!(error.starts_with("kvstore:d: "), "{error}");
        assert_eq!(state.revision(), 3, "the last good state stays");
        assert_eq!(state.policies()[0].name(), "b");
        assert_eq!(state.import_errors(), 1);

        let moved = guard_named("b").replace("{name: b}", "{name: b, namespace: prod}");
        state
            .set_cluster_policies(&[("b".to_owned(), moved)].into())
            .unwrap();
        let policies = state.policies();
        assert_eq!(policies.len(), 1, "the kvstore's set replaces ours whole");
        assert_eq!(policies[0].namespace(), Some("prod"));
    }

    /// A cluster policy letting `app=luke` reach r2d2's port `port_text` on ingress.
    fn luke_on(port_text: &str) -> String {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: luke}}\n\
             spec:\n  endpointSelector: {{matchLabels: {{app: r2d2}}}}\n  ingress:\n  \
             - fromEndpoints: [{{matchLabels: {{app: luke}}}}]\n    toPorts:\n    \
             - ports: [{{port: '{port_text}'}}]\n"
        )
    }

    #[test]
    fn a_changed_cluster_text_is_applied_and_a_bad_one_leaves_the_last_good_in_force() {
        let state = state();
        state
            .set_remote_endpoints(vec![endpoint("node-b/luke", "10.0.1.1", "luke")])
            .unwrap();
        let luke: IpAddr = "10.0.1.1".parse().unwrap();
        let allowed = |state: &State, port| {
            let verdict =
                state
                    .snapshot()
                    .decide_connection("r2d2", Direction::Ingress, luke, port);
            matches!(verdict, axoneme_policy::ConnectionVerdict::Allowed { .. })
        };
        let mut texts: BTreeMap<String, String> = [
            ("guard".to_owned(), guard_named("guard")),
            ("luke".to_owned(), luke_on("5001")),
        ]
        .into();
        state.set_cluster_policies(&texts).unwrap();
        assert!(allowed(&state, 5001) && !allowed(&state, 5002));

        texts.insert("luke".into(), luke_on("5002"));
        state.set_cluster_policies(&texts).unwrap();
        assert!(!allowed(&state, 5001) && allowed(&state, 5002));

        let revision = state.revision();
        texts.insert("luke".into(), luke_on("not-a-port"));
        let error = state.set_cluster_policies(&texts).unwrap_err().to_string();
        assert!(error.starts_with("kvstore:luke: "), "{error}");
        assert_eq!(state.revision(), revision, "the last good state stays");
        assert!(allowed(&state, 5002));

        texts.insert("luke".into(), luke_on("5001"));
        state.set_cluster_policies(&texts).unwrap();
        assert!(allowed(&state, 5001) && !allowed(&state, 5002));

        state
            .set_remote_endpoints(vec![endpoint("node-b/luke", "10.0.1.2", "luke")])
            .unwrap();
        assert!(!allowed(&state, 5001), "the old address is the world's now");
        let moved: IpAddr = "10.0.1.2".parse().unwrap();
        let verdict = state
            .snapshot()
            .decide_connection("r2d2", Direction::Ingress, moved, 5001);
        assert!(matches!(
            verdict,
            axoneme_policy::ConnectionVerdict::Allowed { .. }
        ));
    }

    #[test]
    fn a_cluster_import_is_checked_against_the_state_and_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("axoneme-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("guard.yaml");
        std::fs::write(&file, GUARD).unwrap();
        let config = ConfigSources {
            endpoints: vec![endpoint("r2d2", "10.0.0.1", "r2d2")],
            policy_paths: vec![file.clone()],
            ..ConfigSources::default()
        };
        let state = State::new(builtin_protocols(&ProtocolsConfig::default()), config).unwrap();
        let checked = state
            .check_cluster_import(&text("other.yaml", &guard_named("other")))
            .unwrap();
        assert_eq!(checked.policies[0].name(), "other");
        assert_eq!(checked.warnings.len(), 1);
        assert_eq!((state.revision(), state.policies().len()), (1, 1));
        let error = state
            .check_cluster_import(&text("guard.yaml", GUARD))
            .unwrap_err();
        assert!(
            matches!(&error, StateError::PolicyInFile { name, .. } if name == "guard"),
            "{error}"
        );
        let refused = state.set_cluster_policies(&[("guard".to_owned(), GUARD.to_owned())].into());
        assert!(matches!(refused, Err(StateError::PolicyInFile { .. })));
        assert_eq!(state.revision(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn remote_endpoints_are_replaced_as_a_set_or_not_at_all() {
        let state = state();
        let luke: std::net::IpAddr = "10.0.1.1".parse().unwrap();
        assert_eq!(state.snapshot().identity_of(luke).id, 2);
        let first = state
            .set_remote_endpoints(vec![endpoint("node-a/luke", "10.0.1.1", "luke")])
            .unwrap();
        assert_eq!(state.snapshot().identity_of(luke).labels[0], "app=luke");
        assert_eq!(
            state.endpoints().len(),
            1,
            "remote endpoints are not this node's"
        );
        assert_eq!(
            state
                .set_remote_endpoints(vec![endpoint("node-a/luke", "10.0.1.1", "luke")])
                .unwrap(),
            first,
            "an unchanged set changes nothing"
        );
        let clash = vec![
            endpoint("node-a/luke", "10.0.1.1", "luke"),
            endpoint("node-b/leia", "10.0.1.1", "leia"),
        ];
        assert!(state.set_remote_endpoints(clash).is_err());
        assert_eq!(state.revision(), first, "the last good state stays");
        assert_eq!(state.snapshot().identity_of(luke).labels[0], "app=luke");
        state.set_remote_endpoints(Vec::new()).unwrap();
        assert_eq!(state.snapshot().identity_of(luke).id, 2);
    }

    /// Numbers from a table, recording what is held: the state's side of the seam, judged
    /// without a kvstore.
    #[derive(Default)]
    struct Table {
        numbers: BTreeMap<Vec<String>, u32>,
        held: Mutex<BTreeSet<Vec<String>>>,
    }

    impl IdentityNumbers for Table {
        fn numbers(
            &self,
            sets: &BTreeSet<Vec<String>>,
        ) -> Result<BTreeMap<Vec<String>, u32>, StateError> {
            let mut numbers = BTreeMap::new();
            for set in sets {
                let id = self.numbers.get(set).copied().ok_or_else(|| {
                    StateError::Identities(format!("labels {set:?}: not answered"))
                })?;
                self.held.lock().unwrap().insert(set.clone());
                numbers.insert(set.clone(), id);
            }
            Ok(numbers)
        }

        fn retain(&self, used: &BTreeSet<Vec<String>>) {
            self.held.lock().unwrap().retain(|s| used.contains(s));
        }
    }

    fn labels_of(app: &str) -> Vec<String> {
        vec![
            format!("app={app}"),
            "k8s:io.kubernetes.pod.namespace=default".to_owned(),
        ]
    }

    #[test]
    fn identity_numbers_come_from_the_source_and_unused_ones_are_given_back() {
        let state = state();
        let table = Arc::new(Table {
            numbers: [(labels_of("r2d2"), 4000), (labels_of("luke"), 4001)].into(),
            ..Table::default()
        });
        state
            .use_identity_numbers(Arc::clone(&table) as Arc<dyn IdentityNumbers>)
            .unwrap();
        let r2d2: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(state.snapshot().identity_of(r2d2).id, 4000);
        state
            .set_remote_endpoints(vec![endpoint("node-a/luke", "10.0.1.1", "luke")])
            .unwrap();
        let luke: std::net::IpAddr = "10.0.1.1".parse().unwrap();
        assert_eq!(state.snapshot().identity_of(luke).id, 4001);
        assert_eq!(table.held.lock().unwrap().len(), 2);

        // A label set the source cannot number: refused, the last state stays.
        let revision = state.revision();
        let error = state
            .put_endpoint(endpoint("leia", "10.0.0.5", "leia"))
            .unwrap_err();
        assert!(matches!(error, StateError::Identities(_)), "{error}");
        assert_eq!(state.revision(), revision);
        assert!(state.snapshot().endpoint("leia").is_none());

        state.set_remote_endpoints(Vec::new()).unwrap();
        assert_eq!(
            *table.held.lock().unwrap(),
            BTreeSet::from([labels_of("r2d2")]),
            "luke's labels are given back"
        );
    }
}
