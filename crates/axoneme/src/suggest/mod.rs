//! `axoneme policy suggest`: the least-privilege CiliumNetworkPolicy for traffic the access
//! log recorded.
//!
//! Reads access-log files (JSON lines as the agent writes them, a compact line read as Cilium's;
//! its forwarded requests name no labels, so a policy cannot be suggested from them), keeps the L7 requests that were
//! forwarded (`Request` entries, audited ones included), groups them by endpoint and direction,
//! then by remote identity, port and protocol, and writes one policy per endpoint and direction
//! whose rules allow those requests, generalised by each protocol's suggester (see
//! [`memcache`], [`cassandra`], [`kafka`], [`r2d2`]) unless `--exact` is given. Output is
//! deterministic: everything is sorted, and nothing depends on time or on the order of entries.
//!
//! `Denied` entries are not taken: a policy suggested from them would allow what enforcement
//! refused. This module reads files and writes text; it must not talk to an agent or decide
//! requests (the policy engine judges what it writes). `axoneme policy diff` ([`diff`]), which
//! judges observed requests against a policy, shares its reading of the logs.

mod cassandra;
mod diff;
mod kafka;
mod memcache;
mod r2d2;
mod regex_text;
mod yaml;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use axoneme_sdk::Direction;
use clap::{Args, ValueEnum};

use crate::telemetry::log_forms::cilium_form;

pub use self::diff::{diff, diff_from, DiffArgs, DiffError};
use serde_json::Value;

/// The label that carries an endpoint's namespace in identity labels.
const NAMESPACE_LABEL: &str = "k8s:io.kubernetes.pod.namespace";

/// Why suggesting failed.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    /// A log file could not be read.
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A line is not an access-log entry.
    #[error("{file}:{line}: not an access-log entry: {message}")]
    Entry {
        file: String,
        line: usize,
        message: String,
    },
    /// The observed traffic cannot be written as a policy.
    #[error("endpoint {endpoint:?}: {message}")]
    Unwritable { endpoint: String, message: String },
}

/// A direction as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    /// Requests to the endpoint.
    Ingress,
    /// Requests from the endpoint.
    Egress,
}

impl DirectionArg {
    fn direction(self) -> Direction {
        match self {
            DirectionArg::Ingress => Direction::Ingress,
            DirectionArg::Egress => Direction::Egress,
        }
    }
}

/// `axoneme policy suggest`'s options.
#[derive(Debug, Clone, Args)]
pub struct SuggestArgs {
    /// Access-log files to read (as the agent writes them; rotated files too). Without them,
    /// the running agent's recent flows (the ring `observe --last` replays).
    #[arg(long = "from-log", num_args = 1..)]
    pub from_log: Vec<PathBuf>,
    /// Only this endpoint (default: every endpoint in the logs).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only this direction (default: both).
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
    /// Allow exactly the values observed: no key prefixes, no directories, no roles.
    #[arg(long)]
    pub exact: bool,
    /// Leave out rules covering fewer requests than this (they are listed in a comment).
    #[arg(long = "min-count", default_value_t = 1)]
    pub min_count: u64,
    /// Cassandra: allow a whole keyspace (`ks\..*`) for an action once this many of its
    /// tables were used with it (default: never, since a log cannot show every table).
    #[arg(long = "group-keyspaces")]
    pub group_keyspaces: Option<usize>,
}

/// How far suggesters may generalise.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Generalise {
    /// Only the values observed.
    pub exact: bool,
    /// Cassandra's keyspace threshold.
    pub group_keyspaces: Option<usize>,
}

/// One L7 request as logged: its `generic_l7.fields`.
pub(crate) type Fields = BTreeMap<String, String>;

/// One suggested L7 rule: its keys and values in the order written, and how many observed
/// requests it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SuggestedRule {
    pub keys: Vec<(&'static str, String)>,
    pub count: u64,
}

/// What a protocol's suggester makes of the requests of one peer and port.
#[derive(Debug, Default)]
pub(crate) struct Suggestion {
    pub rules: Vec<SuggestedRule>,
    /// Requests no rule can express, in a few words each, for a comment.
    pub unexpressible: Vec<String>,
}

/// Who and where requests came from (or went to), as a policy peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Peer {
    /// The remote identity's labels, as logged (`key=value`, `reserved:world`).
    labels: Vec<String>,
    port: u16,
    proto: String,
}

/// What was observed of one endpoint in one direction.
#[derive(Debug, Default)]
struct Observed {
    /// The endpoint's identity labels.
    own_labels: Vec<String>,
    /// Per peer, each distinct request and how often it was seen.
    peers: BTreeMap<Peer, BTreeMap<Fields, u64>>,
    requests: u64,
    audited: u64,
}

/// The requests of the logs, by endpoint and direction (`true` for ingress).
type Observations = BTreeMap<(String, bool), Observed>;

/// Access-log entries, one JSON object per line, and what messages call where they came from
/// (a file's path, or the agent's recent flows).
#[derive(Debug, Clone)]
pub struct LogText {
    pub name: String,
    pub text: String,
}

impl LogText {
    /// The text of each file at `paths`.
    pub fn read_files(paths: &[PathBuf]) -> Result<Vec<LogText>, SuggestError> {
        paths
            .iter()
            .map(|path| {
                let name = path.display().to_string();
                match std::fs::read_to_string(path) {
                    Ok(text) => Ok(LogText { name, text }),
                    Err(source) => Err(SuggestError::Read { file: name, source }),
                }
            })
            .collect()
    }
}

/// Runs `axoneme policy suggest` on the files `args` names: the YAML for `args`.
pub fn suggest(args: &SuggestArgs) -> Result<String, SuggestError> {
    suggest_from(args, &LogText::read_files(&args.from_log)?)
}

/// Runs `axoneme policy suggest` on the entries of `logs`: the YAML for `args`.
pub fn suggest_from(args: &SuggestArgs, logs: &[LogText]) -> Result<String, SuggestError> {
    let observations = read_logs(
        logs,
        args.endpoint.as_deref(),
        args.direction.map(DirectionArg::direction),
    )?;
    let generalise = Generalise {
        exact: args.exact,
        group_keyspaces: args.group_keyspaces,
    };
    let files: Vec<String> = logs.iter().map(|log| log.name.clone()).collect();
    let mut out = String::new();
    if observations.is_empty() {
        out.push_str(&format!(
            "# No forwarded L7 requests{} in {}: nothing to suggest.\n",
            filter_text(args),
            files.join(", ")
        ));
        return Ok(out);
    }
    let mut documents = Vec::new();
    for ((endpoint, ingress), observed) in &observations {
        let direction = if *ingress {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let mut document = String::new();
        match yaml::policy(
            &mut document,
            endpoint,
            direction,
            observed,
            &files,
            generalise,
            args.min_count,
        )? {
            yaml::Written::Policy => documents.push(document),
            yaml::Written::Nothing(left_out) => {
                let section = if *ingress { "ingress" } else { "egress" };
                out.push_str(&format!(
                    "# No policy for endpoint {endpoint:?} ({section}): no rule kept.\n"
                ));
                out.push_str(&left_out);
            }
        }
    }
    out.push_str(&documents.join("---\n"));
    Ok(out)
}

/// " for endpoint X, ingress" as the filters say.
fn filter_text(args: &SuggestArgs) -> String {
    let mut text = String::new();
    if let Some(endpoint) = &args.endpoint {
        text.push_str(&format!(" of endpoint {endpoint:?}"));
    }
    if let Some(direction) = args.direction {
        text.push_str(match direction {
            DirectionArg::Ingress => " (ingress)",
            DirectionArg::Egress => " (egress)",
        });
    }
    text
}

/// The rules of one peer's requests, by its protocol's suggester.
fn suggest_rules(
    proto: &str,
    requests: &BTreeMap<Fields, u64>,
    generalise: Generalise,
) -> Option<Suggestion> {
    match proto {
        "memcache" => Some(memcache::suggest(requests, generalise)),
        "cassandra" => Some(cassandra::suggest(requests, generalise)),
        "kafka" => Some(kafka::suggest(requests, generalise)),
        "r2d2" => Some(r2d2::suggest(requests, generalise)),
        _ => None,
    }
}

/// Reads every log's entries into observations, keeping those of `endpoint` and `direction`
/// (all when `None`).
fn read_logs(
    logs: &[LogText],
    endpoint: Option<&str>,
    direction: Option<Direction>,
) -> Result<Observations, SuggestError> {
    let mut observations = Observations::new();
    for log in logs {
        let file = &log.name;
        for (index, line) in log.text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fail = |message: String| SuggestError::Entry {
                file: file.clone(),
                line: index + 1,
                message,
            };
            let entry: Value = serde_json::from_str(line).map_err(|e| fail(e.to_string()))?;
            let entry = cilium_form(entry);
            if let Some(request) = observed_request(&entry).map_err(fail)? {
                let wanted = endpoint.is_none_or(|e| e == request.endpoint)
                    && direction.is_none_or(|d| d == request.direction);
                if wanted {
                    request.record(&mut observations);
                }
            }
        }
    }
    Ok(observations)
}

/// One forwarded L7 request read from an entry.
struct ObservedRequest {
    endpoint: String,
    direction: Direction,
    own_labels: Vec<String>,
    peer: Peer,
    fields: Fields,
    audited: bool,
}

impl ObservedRequest {
    fn record(self, observations: &mut Observations) {
        let key = (self.endpoint, self.direction == Direction::Ingress);
        let observed = observations.entry(key).or_default();
        if observed.own_labels.is_empty() {
            observed.own_labels = self.own_labels;
        }
        observed.requests += 1;
        observed.audited += u64::from(self.audited);
        *observed
            .peers
            .entry(self.peer)
            .or_default()
            .entry(self.fields)
            .or_default() += 1;
    }
}

/// The forwarded L7 request `entry` records; `None` for other entries (responses, denials,
/// connection-level entries without a protocol).
fn observed_request(entry: &Value) -> Result<Option<ObservedRequest>, String> {
    let text = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no string field {name:?}"))
    };
    if text("entry_type")? != "Request" {
        return Ok(None);
    }
    let l7 = entry.get("generic_l7");
    let proto = l7
        .and_then(|l7| l7.get("proto"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if proto.is_empty() {
        return Ok(None);
    }
    if l7.and_then(|l7| l7.get("truncated")).is_some() {
        return Err(
            "a field value was truncated by the log (raise accessLog.maxFieldBytes)".into(),
        );
    }
    let ingress = entry
        .get("is_ingress")
        .and_then(Value::as_bool)
        .ok_or("no boolean field \"is_ingress\"")?;
    let labels = |name: &str| -> Result<Vec<String>, String> {
        let list = entry.get(name).and_then(Value::as_array).ok_or_else(|| {
            format!(
                "no list field {name:?} (the entries of a compact access log, \
                 accessLog.format: compact, name no labels, and policies are written from \
                 labels: suggest from a log in Cilium's form)"
            )
        })?;
        let mut labels: Vec<String> = list
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(format!("{name}: expected strings"))
            })
            .collect::<Result<_, _>>()?;
        labels.sort();
        Ok(labels)
    };
    let (own, remote) = match ingress {
        true => (labels("destination_labels")?, labels("source_labels")?),
        false => (labels("source_labels")?, labels("destination_labels")?),
    };
    let destination: SocketAddr = text("destination_address")?
        .parse()
        .map_err(|e| format!("destination_address: {e}"))?;
    let fields = l7
        .and_then(|l7| l7.get("fields"))
        .and_then(Value::as_object)
        .ok_or("no object field \"generic_l7.fields\"")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    Ok(Some(ObservedRequest {
        endpoint: text("endpoint")?.to_owned(),
        direction: if ingress {
            Direction::Ingress
        } else {
            Direction::Egress
        },
        own_labels: own,
        peer: Peer {
            labels: remote,
            port: destination.port(),
            proto: proto.to_owned(),
        },
        fields,
        audited: entry.get("verdict").and_then(Value::as_str) == Some("Audit"),
    }))
}

/// Values grouped the way an operator would: values sharing a stem (everything up to and
/// including the last separator) become one prefix once at least two distinct values share it;
/// other values stay exact. With `exact`, every value stays exact.
pub(crate) fn stems(
    values: impl IntoIterator<Item = String>,
    separators: &[char],
    exact: bool,
) -> BTreeMap<String, Matcher> {
    let mut by_stem: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for value in values {
        let stem = value
            .rfind(separators)
            .map(|at| value[..=at].to_owned())
            .filter(|_| !exact);
        by_stem.entry(stem).or_default().push(value);
    }
    let mut matchers = BTreeMap::new();
    for (stem, mut values) in by_stem {
        values.sort();
        values.dedup();
        match stem {
            Some(stem) if values.len() >= 2 => {
                for value in values {
                    matchers.insert(value, Matcher::Prefix(stem.clone()));
                }
            }
            _ => {
                for value in values {
                    matchers.insert(value.clone(), Matcher::Exact(value));
                }
            }
        }
    }
    matchers
}

/// Values grouped by their first segment (everything up to and including the first
/// separator): a group of at least two distinct values becomes one prefix, the longest they all
/// share that ends with a separator (`user:1:name`, `user:2:name` → `user:`; `a/b/1`, `a/b/2` →
/// `a/b/`); other values stay exact. With `exact`, every value stays exact.
pub(crate) fn common_prefixes(
    values: impl IntoIterator<Item = String>,
    separators: &[char],
    exact: bool,
) -> BTreeMap<String, Matcher> {
    let mut by_segment: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for value in values {
        let segment = value
            .find(separators)
            .map(|at| value[..=at].to_owned())
            .filter(|_| !exact);
        by_segment.entry(segment).or_default().push(value);
    }
    let mut matchers = BTreeMap::new();
    for (segment, mut values) in by_segment {
        values.sort();
        values.dedup();
        match segment {
            Some(segment) if values.len() >= 2 => {
                let prefix = shared_prefix(&values, separators).unwrap_or(segment);
                for value in values {
                    matchers.insert(value, Matcher::Prefix(prefix.clone()));
                }
            }
            _ => {
                for value in values {
                    matchers.insert(value.clone(), Matcher::Exact(value));
                }
            }
        }
    }
    matchers
}

/// The longest start that all of `values` (sorted) share and that ends with a separator.
fn shared_prefix(values: &[String], separators: &[char]) -> Option<String> {
    let (first, last) = (values.first()?, values.last()?);
    let common: usize = first
        .char_indices()
        .zip(last.chars())
        .take_while(|((_, a), b)| a == b)
        .map(|((_, a), _)| a.len_utf8())
        .sum();
    let cut = first[..common].rfind(separators)?;
    Some(first[..=cut].to_owned())
}

/// How a rule matches a value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Matcher {
    /// This value only.
    Exact(String),
    /// Values starting with this.
    Prefix(String),
    /// Any of these (sorted, none an `Any`).
    AnyOf(Vec<Matcher>),
}

impl Matcher {
    /// The matcher as a regular expression matching whole values.
    pub(crate) fn regex(&self) -> String {
        match self {
            Matcher::Exact(value) => regex_text::escape(value),
            Matcher::Prefix(prefix) => format!("{}.*", regex_text::escape(prefix)),
            Matcher::AnyOf(matchers) => matchers
                .iter()
                .map(Matcher::regex)
                .collect::<Vec<_>>()
                .join("|"),
        }
    }

    /// One matcher matching what either does.
    pub(crate) fn union(self, other: Matcher) -> Matcher {
        let mut parts = Vec::new();
        for matcher in [self, other] {
            match matcher {
                Matcher::AnyOf(inner) => parts.extend(inner),
                single => parts.push(single),
            }
        }
        parts.sort();
        parts.dedup();
        match parts.len() {
            1 => parts.remove(0),
            _ => Matcher::AnyOf(parts),
        }
    }
}

/// For each multi-value request, the matchers of its values merged into one, so that a single
/// rule matches all of its values (as protocols whose rules constrain every value of a request
/// require). `matchers` maps each value to its matcher; the result maps each value to its
/// merged matcher.
pub(crate) fn merge_for_requests<'r>(
    matchers: BTreeMap<String, Matcher>,
    requests: impl Iterator<Item = &'r [String]>,
) -> BTreeMap<String, Matcher> {
    let mut distinct: Vec<Matcher> = matchers.values().cloned().collect();
    distinct.sort();
    distinct.dedup();
    let index = |m: &Matcher| distinct.binary_search(m).unwrap_or_default();
    let mut parent: Vec<usize> = (0..distinct.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for values in requests {
        let mut ids = values.iter().filter_map(|v| matchers.get(v)).map(index);
        let Some(first) = ids.next() else { continue };
        for id in ids {
            let (a, b) = (root(&mut parent, first), root(&mut parent, id));
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut classes: BTreeMap<usize, Matcher> = BTreeMap::new();
    for (i, matcher) in distinct.iter().enumerate() {
        let class = root(&mut parent, i);
        let merged = match classes.remove(&class) {
            None => matcher.clone(),
            Some(before) => before.union(matcher.clone()),
        };
        classes.insert(class, merged);
    }
    matchers
        .into_iter()
        .map(|(value, matcher)| {
            let class = root(&mut parent, index(&matcher));
            (value, classes[&class].clone())
        })
        .collect()
}

#[cfg(test)]
mod tests;
