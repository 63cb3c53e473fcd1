//! `axoneme policy diff`: which observed requests a policy would deny if it enforced them,
//! grouped by endpoint, direction, remote and port, so that a policy can be fixed before it
//! enforces anything.
//!
//! The requests come from access-log files, read as [`super::suggest`] reads them. The policy
//! engine judges them: the endpoints and remotes of the log are rebuilt as endpoints of a
//! snapshot (by their labels, at addresses of their own; the world at an address no endpoint
//! has, the host at a host address), each connection is decided by the snapshot, and each
//! request is checked by its protocol's rule matcher as `axoneme policy trace` does. A policy in
//! audit mode is judged as if it enforced. This module must not suggest rules.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use axoneme_policy::{load_paths, ConnectionVerdict, EndpointSpec, Snapshot};
use axoneme_sdk::{Direction, Registry};
use clap::Args;

use super::{
    read_logs, DirectionArg, Fields, LogText, Observations, SuggestError, NAMESPACE_LABEL,
};

/// `axoneme policy diff`'s options.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The policy files to judge with (YAML or JSON; directories too).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Access-log files to read the observed requests from. Without them, the running agent's
    /// recent flows (the ring `observe --last` replays).
    #[arg(long = "from-log", num_args = 1..)]
    pub from_log: Vec<PathBuf>,
    /// Only this endpoint (default: every endpoint in the logs).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only this direction (default: both).
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
}

/// Why diffing failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The logs could not be read.
    #[error(transparent)]
    Logs(#[from] SuggestError),
    /// The policies could not be loaded or compiled.
    #[error("{0}")]
    Policy(#[from] axoneme_policy::PolicyError),
}

/// The address the world's requests are judged from: no endpoint has it.
const WORLD: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// The host's address.
const HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

/// Runs `axoneme policy diff` on the files `args` names: the report, in text, of what
/// `args.files` would deny.
pub fn diff(args: &DiffArgs, registry: &Registry) -> Result<String, DiffError> {
    diff_from(args, &LogText::read_files(&args.from_log)?, registry)
}

/// Runs `axoneme policy diff` on the entries of `logs`.
pub fn diff_from(
    args: &DiffArgs,
    logs: &[LogText],
    registry: &Registry,
) -> Result<String, DiffError> {
    let observations = read_logs(
        logs,
        args.endpoint.as_deref(),
        args.direction.map(DirectionArg::direction),
    )?;
    let policies = load_paths(&args.files, axoneme_policy::DEFAULT_MAX_POLICY_BYTES)?;
    let identities = Identities::of(&observations);
    let snapshot = Snapshot::build(policies, &identities.endpoints, &[HOST], registry, None)?;
    let mut out = String::new();
    let (mut total, mut denied_total) = (0u64, 0u64);
    for ((endpoint, ingress), observed) in &observations {
        let direction = match ingress {
            true => Direction::Ingress,
            false => Direction::Egress,
        };
        for (peer, requests) in &observed.peers {
            let remote = identities.address(&peer.labels);
            let verdict = snapshot.decide_connection(endpoint, direction, remote, peer.port);
            let mut denied: BTreeMap<String, Vec<(&Fields, u64)>> = BTreeMap::new();
            for (fields, &count) in requests {
                total += count;
                if let Some(reason) = denial(&verdict, &peer.proto, fields, registry) {
                    denied.entry(reason).or_default().push((fields, count));
                }
            }
            if denied.is_empty() {
                continue;
            }
            let count: u64 = denied.values().flatten().map(|(_, n)| n).sum();
            denied_total += count;
            let _ = writeln!(
                out,
                "{endpoint} ({}) from {} on port {} ({}): {count} of {} requests would be denied",
                if *ingress { "ingress" } else { "egress" },
                peer.labels.join(","),
                peer.port,
                peer.proto,
                requests.values().sum::<u64>()
            );
            for (reason, requests) in denied {
                let _ = writeln!(out, "  {reason}:");
                for (fields, count) in requests {
                    let text: Vec<String> =
                        fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = writeln!(out, "    {count:>6}  {}", text.join(" "));
                }
            }
        }
    }
    let _ = write!(
        out,
        "{denied_total} of {total} observed requests would be denied by {}",
        args.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(out)
}

/// Why `verdict` (on a connection whose requests the log says are `proto`) would deny the
/// request `fields` describe; `None` when it would be allowed.
fn denial(
    verdict: &ConnectionVerdict,
    proto: &str,
    fields: &Fields,
    registry: &Registry,
) -> Option<String> {
    let port_policy = match verdict {
        ConnectionVerdict::Unrestricted | ConnectionVerdict::Allowed { l7: None, .. } => {
            return None
        }
        ConnectionVerdict::Refused { reason, .. } => {
            return Some(format!("refused at L3/L4: {reason}"))
        }
        ConnectionVerdict::Allowed { l7: Some(l7), .. } => l7,
    };
    if port_policy.proto() != Some(proto) {
        return Some(format!(
            "the policy parses the port as {:?}",
            port_policy.proto().unwrap_or_default()
        ));
    }
    let protocol = registry.get(proto)?;
    let described = trace_fields(proto, fields);
    let mut failure = None;
    let verdict = axoneme_sdk::RequestPolicy::check(&**port_policy, &mut |rules| {
        protocol.trace(rules, &described).unwrap_or_else(|error| {
            failure.get_or_insert(error);
            false
        })
    });
    if let Some(error) = failure {
        return Some(format!("cannot be judged: {error}"));
    }
    match (verdict.allowed && !verdict.audited, verdict.policy_name) {
        (true, _) => None,
        (false, "") => Some("no rule allows it".to_owned()),
        (false, policy) => Some(format!("denied by a deny rule of {policy}")),
    }
}

/// The fields of a logged request as `axoneme policy trace` takes them.
fn trace_fields(proto: &str, fields: &Fields) -> Fields {
    let names: &[(&str, &str)] = match proto {
        "memcache" => &[("command", "command"), ("keys", "keys")],
        "cassandra" => &[
            ("query_action", "query_action"),
            ("query_table", "query_table"),
        ],
        "kafka" => &[
            ("api_key", "apiKey"),
            ("api_version", "apiVersion"),
            ("topic", "topic"),
        ],
        "r2d2" => &[("cmd", "cmd"), ("file", "file")],
        _ => &[],
    };
    names
        .iter()
        .filter_map(|(logged, traced)| {
            let value = fields.get(*logged).filter(|v| !v.is_empty())?;
            Some(((*traced).to_owned(), value.clone()))
        })
        .collect()
}

/// The log's endpoints and remotes as a snapshot's endpoints, each at an address of its own.
struct Identities {
    endpoints: Vec<EndpointSpec>,
    /// Each label set's address.
    addresses: BTreeMap<Vec<String>, IpAddr>,
}

impl Identities {
    fn of(observations: &Observations) -> Identities {
        let mut identities = Identities {
            endpoints: Vec::new(),
            addresses: BTreeMap::new(),
        };
        for ((endpoint, _), observed) in observations {
            identities.add(Some(endpoint), &observed.own_labels);
        }
        for observed in observations.values() {
            for peer in observed.peers.keys() {
                identities.add(None, &peer.labels);
            }
        }
        identities
    }

    /// Adds the endpoint `name` (a name of its own when `None`) with identity `labels`, unless
    /// an endpoint has them already.
    fn add(&mut self, name: Option<&str>, labels: &[String]) {
        if self.addresses.contains_key(labels) || labels.iter().any(|l| l.starts_with("reserved:"))
        {
            return;
        }
        let number = self.endpoints.len() as u32 + 1;
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + number));
        let mut namespace = None;
        let mut plain = BTreeMap::new();
        for label in labels {
            let (key, value) = label.split_once('=').unwrap_or((label, ""));
            match key {
                NAMESPACE_LABEL => namespace = Some(value.to_owned()),
                key => {
                    plain.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        self.endpoints.push(EndpointSpec {
            name: name.map_or_else(|| format!("remote-{number}"), str::to_owned),
            ips: vec![ip],
            labels: plain,
            namespace,
            policy_audit_mode: false,
        });
        self.addresses.insert(labels.to_vec(), ip);
    }

    /// Where requests of the identity `labels` come from.
    fn address(&self, labels: &[String]) -> IpAddr {
        if labels.iter().any(|l| l == "reserved:host") {
            return HOST;
        }
        self.addresses.get(labels).copied().unwrap_or(WORLD)
    }
}
