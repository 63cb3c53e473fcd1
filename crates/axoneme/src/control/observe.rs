//! `axoneme observe` (alias `monitor`), the client side of the agent's flow stream: it turns the
//! command line's filters into `/v1/monitor`'s query (the agent filters, so unmatched entries
//! never cross the socket), and shows each entry as one line for people, like `hubble
//! observe`, or as the agent's JSON (or YAML) with `-o`.
//!
//! With `--input-file` it reads an access-log file instead (one the agent or the Envoy filter
//! wrote, in Cilium's form or the compact one, read as Cilium's), filtered by the same code the
//! agent filters with, and needs no agent.
//!
//! A line reads `TIME: SOURCE (IDENTITY) -> DESTINATION (IDENTITY) PROTO-TYPE VERDICT (L7)`,
//! sides named `namespace/name` when an endpoint owns the address. It only renders what the
//! agent (or the file) holds; it decides nothing and keeps no flows.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use crate::config::ProtocolsConfig;
use crate::control::cli::{encode, Client, Output};
use crate::telemetry::flow_filter::{parse_query, LoggedFlow, QueryContext};
use crate::telemetry::log_forms::{cilium_form, is_compact};

/// Examples shown under `axoneme observe --help`.
const EXAMPLES: &str = "\
Examples:
  # Every flow, live
  axoneme observe
  # Denied memcached gets from pods labelled app=luke
  axoneme observe --verdict DENIED --protocol memcache --from-label app=luke --l7 command=get
  # Requests an audit-mode policy would deny, let through
  axoneme observe --verdict AUDIT
  # The last 20 flows to the endpoint cache, then live ones
  axoneme observe --to-endpoint cache --last 20 --follow
  # Full entries as JSON lines
  axoneme observe -o json";

/// An entry's verdict, as `--verdict` names it.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum VerdictArg {
    /// Passed on (request and response entries).
    Forwarded,
    /// Stopped (denied entries).
    Denied,
    /// Passed on although policy would deny it: audit mode (request entries marked so).
    Audit,
}

/// An entry's type, as `--type` names it.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TypeArg {
    /// An allowed request.
    Request,
    /// A reply.
    Response,
    /// A denied request or refused connection.
    Denied,
}

/// `axoneme observe`'s filters and replay. Different filters must all match; a filter given
/// several times matches any of its values.
#[derive(Debug, Clone, Default, Args)]
#[command(after_help = EXAMPLES)]
pub struct ObserveArgs {
    /// Only flows from endpoints with this label (key=value, or a key).
    #[arg(long = "from-label", value_name = "LABEL")]
    pub from_labels: Vec<String>,
    /// Only flows to endpoints with this label.
    #[arg(long = "to-label", value_name = "LABEL")]
    pub to_labels: Vec<String>,
    /// Only flows from this security identity.
    #[arg(long = "from-identity", value_name = "ID")]
    pub from_identities: Vec<u32>,
    /// Only flows to this security identity.
    #[arg(long = "to-identity", value_name = "ID")]
    pub to_identities: Vec<u32>,
    /// Only flows from this endpoint (by name).
    #[arg(long = "from-endpoint", value_name = "NAME")]
    pub from_endpoints: Vec<String>,
    /// Only flows to this endpoint.
    #[arg(long = "to-endpoint", value_name = "NAME")]
    pub to_endpoints: Vec<String>,
    /// Only flows through a listener guarding this endpoint, either way.
    #[arg(long = "endpoint", value_name = "NAME")]
    pub endpoints: Vec<String>,
    /// Only flows with this verdict.
    #[arg(long = "verdict", value_enum, ignore_case = true)]
    pub verdicts: Vec<VerdictArg>,
    /// Only flows of this protocol (the agent lists the valid ones when it is unknown).
    #[arg(long = "protocol", visible_alias = "proto", value_name = "PROTOCOL")]
    pub protocols: Vec<String>,
    /// Only entries of this type.
    #[arg(long = "type", value_enum, ignore_case = true)]
    pub entry_types: Vec<TypeArg>,
    /// Only flows whose L7 field has this value, e.g. command=get.
    #[arg(long = "l7", value_name = "FIELD=VALUE")]
    pub l7: Vec<String>,
    /// Show the last N recent flows the agent kept (those the filters take), then stop, or
    /// go on with --follow.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// After --last, go on showing new flows (without --last, flows are always followed).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Show times in UTC rather than local time.
    #[arg(long)]
    pub utc: bool,
    /// Read the flows from this access-log file ("-": standard input) instead of asking the
    /// agent, as `hubble observe --input-file` does; endpoint filters then match the endpoint
    /// each entry names as guarded.
    #[arg(long = "input-file", value_name = "FILE", conflicts_with = "follow")]
    pub input_file: Option<PathBuf>,
}

impl ObserveArgs {
    /// The query of `/v1/monitor` asking for what these arguments want.
    pub fn query(&self) -> String {
        self.pairs()
            .iter()
            .map(|(key, value)| format!("{key}={}", encode(value)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// What these arguments want, as the keys and values of `/v1/monitor`'s query.
    fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        let mut add = |key, values: &[String]| {
            pairs.extend(values.iter().map(|v| (key, v.clone())));
        };
        add("from_label", &self.from_labels);
        add("to_label", &self.to_labels);
        add("from_endpoint", &self.from_endpoints);
        add("to_endpoint", &self.to_endpoints);
        add("endpoint", &self.endpoints);
        add("protocol", &self.protocols);
        add("l7", &self.l7);
        for id in &self.from_identities {
            pairs.push(("from_identity", id.to_string()));
        }
        for id in &self.to_identities {
            pairs.push(("to_identity", id.to_string()));
        }
        for verdict in &self.verdicts {
            let name = match verdict {
                VerdictArg::Forwarded => "FORWARDED",
                VerdictArg::Denied => "DENIED",
                VerdictArg::Audit => "AUDIT",
            };
            pairs.push(("verdict", name.into()));
        }
        for entry_type in &self.entry_types {
            let name = match entry_type {
                TypeArg::Request => "request",
                TypeArg::Response => "response",
                TypeArg::Denied => "denied",
            };
            pairs.push(("type", name.into()));
        }
        if let Some(last) = self.last {
            pairs.push(("last", last.to_string()));
            pairs.push(("follow", self.follow.to_string()));
        }
        pairs
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect()
    }

    /// Whether the stream goes on until stopped.
    fn live(&self) -> bool {
        self.last.is_none() || self.follow
    }
}

/// Streams the flows `args` ask for to standard output, in `output`'s form.
pub(crate) async fn observe(
    client: &Client,
    args: &ObserveArgs,
    output: Output,
) -> anyhow::Result<()> {
    if let Some(path) = &args.input_file {
        return observe_file(path, args, output);
    }
    let names = match output {
        Output::Table => endpoint_names(client).await?,
        Output::Json | Output::Yaml => EndpointNames::default(),
    };
    let path = format!("/v1/monitor?{}", args.query());
    let response = client.send(Method::GET, &path, None).await?;
    if !response.status().is_success() {
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        bail!(
            "{}",
            value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the agent refused to stream flows")
        );
    }
    if args.live() {
        eprintln!("Listening for flows... (Ctrl-C to stop)");
    }
    let mut body = response.into_body();
    let mut stdout = tokio::io::stdout();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Some(data) = frame?.data_ref().cloned() else {
            continue;
        };
        pending.extend_from_slice(&data);
        let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
            continue;
        };
        let complete: Vec<u8> = pending.drain(..=end).collect();
        let mut out = Vec::new();
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            render_line(line, output, &names, args.utc, &mut out)?;
        }
        stdout.write_all(&out).await?;
        stdout.flush().await?;
    }
    Ok(())
}

/// Shows the flows `args` ask for among the access-log entries in the file at `path`, without
/// an agent: the filters are those the agent applies, checked the same way.
fn observe_file(path: &Path, args: &ObserveArgs, output: Output) -> anyhow::Result<()> {
    let registry = crate::builtin_protocols(&ProtocolsConfig::default());
    let protocols = registry.names();
    let context = QueryContext {
        endpoints: None,
        protocols: &protocols,
    };
    let query = parse_query(args.pairs(), &context)?;
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(BufReader::new(file))
    };
    let names = EndpointNames::default();
    let mut stdout = std::io::stdout().lock();
    let mut kept: VecDeque<Vec<u8>> = VecDeque::new();
    for (index, line) in reader.lines().enumerate() {
        let place = || format!("{}:{}", path.display(), index + 1);
        let line = line.with_context(place)?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: not an access-log entry", place()))?;
        let compact = is_compact(&entry);
        if compact && !(query.filter.from_labels.is_empty() && query.filter.to_labels.is_empty()) {
            bail!(
                "{}: a compact access-log entry (accessLog.format: compact) names no labels, so                  --from-label and --to-label cannot match it; filter by --from-identity and                  --to-identity instead",
                place()
            );
        }
        let entry = cilium_form(entry);
        if !query.filter.matches(&LoggedFlow(&entry)) {
            continue;
        }
        // A compact line is shown as the Cilium line it reads as.
        let line = if compact {
            serde_json::to_vec(&entry)?
        } else {
            line.into_bytes()
        };
        let mut out = Vec::new();
        render_line(&line, output, &names, args.utc, &mut out)?;
        match query.last {
            Some(last) => {
                kept.push_back(out);
                if kept.len() > last {
                    kept.pop_front();
                }
            }
            None => stdout.write_all(&out)?,
        }
    }
    for out in kept {
        stdout.write_all(&out)?;
    }
    Ok(stdout.flush()?)
}

/// Appends one streamed line to `out` in `output`'s form; news of lost entries goes to
/// standard error for people.
fn render_line(
    line: &[u8],
    output: Output,
    names: &EndpointNames,
    utc: bool,
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    if let Output::Json = output {
        out.extend_from_slice(line);
        out.push(b'\n');
        return Ok(());
    }
    let entry: Value = serde_json::from_slice(line)?;
    match output {
        Output::Yaml => {
            out.extend_from_slice(b"---\n");
            out.extend_from_slice(serde_yaml::to_string(&entry)?.as_bytes());
        }
        _ => match entry.get("monitor_dropped") {
            Some(missed) => eprintln!("({missed} flows lost: this watcher fell behind)"),
            None => {
                out.extend_from_slice(flow_line(&entry, names, utc).as_bytes());
                out.push(b'\n');
            }
        },
    }
    Ok(())
}

/// Endpoints as `namespace/name`, by address (this node's and, in cluster mode, the other
/// nodes') and by name (this node's, which its entries name as the guarded endpoint).
#[derive(Debug, Default)]
pub struct EndpointNames {
    by_ip: HashMap<IpAddr, String>,
    by_name: HashMap<String, String>,
}

impl EndpointNames {
    /// The names of the endpoints in the answers of `GET /v1/endpoint` (`local`) and
    /// `GET /v1/cluster/endpoints` (`remote`).
    pub fn from_lists(local: &Value, remote: &Value) -> EndpointNames {
        let mut names = EndpointNames::default();
        for (list, guarded_here) in [(remote, false), (local, true)] {
            for endpoint in list.as_array().into_iter().flatten() {
                let own_name = endpoint["name"].as_str().unwrap_or_default();
                let name = format!(
                    "{}/{own_name}",
                    endpoint["namespace"].as_str().unwrap_or("default"),
                );
                for ip in endpoint["ips"].as_array().into_iter().flatten() {
                    if let Some(ip) = ip.as_str().and_then(|ip| ip.parse().ok()) {
                        names.by_ip.insert(ip, name.clone());
                    }
                }
                if guarded_here {
                    names.by_name.insert(own_name.to_owned(), name);
                }
            }
        }
        names
    }
}

/// This node's endpoints and, in cluster mode, the other nodes'.
async fn endpoint_names(client: &Client) -> anyhow::Result<EndpointNames> {
    let local = client.call(Method::GET, "/v1/endpoint", None).await?;
    let response = client
        .send(Method::GET, "/v1/cluster/endpoints", None)
        .await?;
    let remote = match response.status() {
        // Cluster mode is off: there are no other nodes.
        StatusCode::CONFLICT => Value::Null,
        status if status.is_success() => {
            let bytes = response.into_body().collect().await?.to_bytes();
            serde_json::from_slice(&bytes)?
        }
        status => bail!("the agent did not list the cluster's endpoints: {status}"),
    };
    Ok(EndpointNames::from_lists(&local, &remote))
}

/// One entry as a line for people:
/// `2026-12-05T20:51:30.123Z: default/luke (257) -> default/cache (256) memcache-request
/// FORWARDED (get alliance/fleet/a)`.
pub fn flow_line(entry: &Value, names: &EndpointNames, utc: bool) -> String {
    let time = entry["timestamp"]
        .as_u64()
        .map(|nanos| format_time(nanos, utc))
        .unwrap_or_default();
    // The guarded endpoint is named in the entry: the destination of ingress, the source of
    // egress. Its address may be one it does not own (a listener's upstream on loopback).
    // Without the agent's list, its namespace is the one its labels carry.
    let ingress = entry["is_ingress"].as_bool().unwrap_or(true);
    let guarded = entry["endpoint"]
        .as_str()
        .filter(|name| !name.is_empty())
        .map(|name| match names.by_name.get(name) {
            Some(named) => named.clone(),
            None => {
                let labels = if ingress {
                    "destination_labels"
                } else {
                    "source_labels"
                };
                format!("{}/{name}", namespace_of(&entry[labels]))
            }
        });
    let side = |address_key: &str, id_key: &str, is_guarded: bool| {
        let address = entry[address_key].as_str().unwrap_or_default();
        let name = guarded
            .clone()
            .filter(|_| is_guarded)
            .or_else(|| {
                let ip = address.parse::<SocketAddr>().ok()?.ip();
                names.by_ip.get(&ip).cloned()
            })
            .unwrap_or_else(|| address.to_owned());
        format!("{name} ({})", cell(&entry[id_key]))
    };
    let entry_type = entry["entry_type"].as_str().unwrap_or_default();
    let verdict = match (entry_type, entry["verdict"].as_str()) {
        ("Denied", _) => "DENIED",
        (_, Some("Audit")) => "AUDIT",
        _ => "FORWARDED",
    };
    let proto = match entry["generic_l7"]["proto"].as_str() {
        Some("") | None => "l4",
        Some(proto) => proto,
    };
    let summary = entry["generic_l7"]["fields"]
        .as_object()
        .map(l7_summary)
        .unwrap_or_default();
    let mut line = format!(
        "{time}: {} -> {} {proto}-{} {verdict}",
        side("source_address", "source_security_id", !ingress),
        side("destination_address", "destination_security_id", ingress),
        entry_type.to_ascii_lowercase(),
    );
    if !summary.is_empty() {
        line.push_str(&format!(" ({summary})"));
    }
    line
}

/// The namespace named by a side's labels (`k8s:io.kubernetes.pod.namespace=...`), or
/// `default`.
fn namespace_of(labels: &Value) -> &str {
    labels
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|label| label.strip_prefix("k8s:io.kubernetes.pod.namespace="))
        .unwrap_or("default")
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The L7 fields that name what a request does, per protocol: memcached's `command`, R2-D2's
/// `cmd`, CQL's `query_action`, Kafka's `api_key`.
const ACTIONS: [&str; 4] = ["command", "cmd", "query_action", "api_key"];

/// The L7 fields that name what it does it to: memcached's `keys`, R2-D2's `file`, CQL's
/// `query_table`, Kafka's `topic`.
const OBJECTS: [&str; 4] = ["keys", "file", "query_table", "topic"];

/// What an entry's L7 fields say in a few words: the action and its object (`get
/// alliance/fleet/a`, `select attendance.daily_records`, `produce deathstar-plans`), or every
/// field as `key=value` when the entry has no action.
pub fn l7_summary(fields: &Map<String, Value>) -> String {
    let first = |keys: &[&str]| {
        keys.iter()
            .filter_map(|key| fields.get(*key).and_then(Value::as_str))
            .find(|value| !value.is_empty())
    };
    match first(&ACTIONS) {
        Some(action) => match first(&OBJECTS) {
            Some(object) => format!("{action} {object}"),
            None => action.to_owned(),
        },
        None => fields
            .iter()
            .map(|(key, value)| format!("{key}={}", cell(value)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// `nanos` after the epoch as RFC 3339 with milliseconds: in UTC with `Z`, or in local time
/// with its offset.
pub fn format_time(nanos: u64, utc: bool) -> String {
    let seconds = (nanos / 1_000_000_000) as libc::time_t;
    let millis = (nanos / 1_000_000) % 1000;
    // SAFETY: `tm` is plain old data (integers and a pointer), for which all zeroes is valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals, valid for the call; the functions write only
    // `tm` and are the reentrant forms, safe from any thread.
    let filled = unsafe {
        if utc {
            libc::gmtime_r(&seconds, &mut tm)
        } else {
            libc::localtime_r(&seconds, &mut tm)
        }
    };
    if filled.is_null() {
        return format!("@{nanos}");
    }
    let offset = if utc {
        "Z".to_owned()
    } else {
        let minutes = tm.tm_gmtoff / 60;
        let sign = if minutes < 0 { '-' } else { '+' };
        format!("{sign}{:02}:{:02}", minutes.abs() / 60, minutes.abs() % 60)
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}{offset}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names() -> EndpointNames {
        EndpointNames::from_lists(
            &json!([
                {"name": "luke", "namespace": "default", "ips": ["127.0.0.21"]},
                {"name": "cache", "namespace": "empire", "ips": ["127.0.0.1", "::1"]},
            ]),
            &Value::Null,
        )
    }

    fn fields(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_summary_is_the_action_and_its_object_per_protocol() {
        let cases = [
            (
                json!({"command": "get", "keys": "alliance/fleet/a"}),
                "get alliance/fleet/a",
            ),
            (
                json!({"cmd": "READ", "file": "/public/plans"}),
                "READ /public/plans",
            ),
            (
                json!({"query_action": "select", "query_table": "attendance.daily_records", "status": "x"}),
                "select attendance.daily_records",
            ),
            (
                json!({"api_key": "produce", "api_version": "9", "correlation_id": "4", "topic": "deathstar-plans"}),
                "produce deathstar-plans",
            ),
            (json!({"api_key": "metadata", "topic": ""}), "metadata"),
            (
                json!({"error": "bad frame", "status": "closed"}),
                "error=bad frame status=closed",
            ),
            (json!({}), ""),
        ];
        for (fields_json, expected) in cases {
            assert_eq!(l7_summary(&fields(fields_json)), expected);
        }
    }

    #[test]
    fn times_are_rfc3339_in_utc_or_with_the_local_offset() {
        // 2026-12-05T19:05:52.123456789Z
        let nanos = 1_796_497_552_123_456_789;
        assert_eq!(format_time(nanos, true), "2026-12-05T19:05:52.123Z");
        let local = format_time(nanos, false);
        let (clock, offset) = local.split_at(23);
        let offset_minutes = match offset {
            "Z" => 0,
            _ => {
                let sign = if offset.starts_with('-') { -1 } else { 1 };
                let hours: i64 = offset[1..3].parse().unwrap();
                let minutes: i64 = offset[4..6].parse().unwrap();
                sign * (hours * 60 + minutes)
            }
        };
        assert!(offset.len() == 6 || offset == "Z", "{local}");
        let hour: i64 = clock[11..13].parse().unwrap();
        let minute: i64 = clock[14..16].parse().unwrap();
        let local_minutes = hour * 60 + minute;
        let expected = (19 * 60 + 5 + offset_minutes).rem_euclid(24 * 60);
        assert_eq!(local_minutes, expected, "{local}");
        assert!(clock.ends_with(":52.123"), "{local}");
    }

    #[test]
    fn a_line_names_both_sides_the_protocol_the_verdict_and_the_request() {
        let entry = json!({
            "timestamp": 1_796_497_552_123_456_789_u64,
            "entry_type": "Request",
            "source_security_id": 257,
            "destination_security_id": 256,
            "source_address": "127.0.0.21:40000",
            "destination_address": "127.0.0.1:11211",
            "generic_l7": {"proto": "memcache", "fields": {"command": "get", "keys": "alliance/fleet/a"}},
        });
        assert_eq!(
            flow_line(&entry, &names(), true),
            "2026-12-05T19:05:52.123Z: default/luke (257) -> empire/cache (256) \
             memcache-request FORWARDED (get alliance/fleet/a)"
        );
        let refused = json!({
            "timestamp": 1_796_497_552_000_000_000_u64,
            "entry_type": "Denied",
            "source_security_id": 2,
            "destination_security_id": 256,
            "source_address": "10.9.9.9:5000",
            "destination_address": "[::1]:11211",
            "generic_l7": {"proto": "", "fields": {}},
        });
        assert_eq!(
            flow_line(&refused, &names(), true),
            "2026-12-05T19:05:52.000Z: 10.9.9.9:5000 (2) -> empire/cache (256) l4-denied DENIED"
        );
        let audited = json!({
            "timestamp": 1_796_497_552_000_000_000_u64,
            "entry_type": "Request",
            "verdict": "Audit",
            "reason": "no-allow",
            "source_security_id": 257,
            "destination_security_id": 256,
            "source_address": "127.0.0.21:40000",
            "destination_address": "127.0.0.1:11211",
            "generic_l7": {"proto": "memcache", "fields": {"command": "set", "keys": "a"}},
        });
        assert_eq!(
            flow_line(&audited, &names(), true),
            "2026-12-05T19:05:52.000Z: default/luke (257) -> empire/cache (256) \
             memcache-request AUDIT (set a)"
        );
    }

    #[test]
    fn the_guarded_endpoint_is_named_from_the_entry_and_other_nodes_by_address() {
        // As in cluster mode: memcached is this node's endpoint, reached on the listener's
        // upstream (loopback, which it does not own); the client lives on another node.
        let names = EndpointNames::from_lists(
            &json!([{"name": "memcached", "namespace": "default", "ips": ["10.99.0.11"]}]),
            &json!([
                {"node": "node-b", "name": "maintenance", "namespace": "fleet",
                 "ips": ["10.99.0.12"], "identity": 257},
            ]),
        );
        let ingress = json!({
            "timestamp": 1_796_497_552_000_000_000_u64,
            "entry_type": "Request",
            "is_ingress": true,
            "endpoint": "memcached",
            "source_security_id": 257,
            "destination_security_id": 256,
            "source_address": "10.99.0.12:46455",
            "destination_address": "127.0.0.1:11211",
            "generic_l7": {"proto": "memcache", "fields": {"command": "get", "keys": "a"}},
        });
        assert_eq!(
            flow_line(&ingress, &names, true),
            "2026-12-05T19:05:52.000Z: fleet/maintenance (257) -> default/memcached (256) \
             memcache-request FORWARDED (get a)"
        );
        // Egress: the guarded endpoint is the source; the destination is named by address.
        let egress = json!({
            "timestamp": 1_796_497_552_000_000_000_u64,
            "entry_type": "Denied",
            "is_ingress": false,
            "endpoint": "memcached",
            "source_security_id": 256,
            "destination_security_id": 257,
            "source_address": "127.0.0.1:40000",
            "destination_address": "10.99.0.12:11211",
            "generic_l7": {"proto": "memcache", "fields": {"command": "set", "keys": "a"}},
        });
        assert_eq!(
            flow_line(&egress, &names, true),
            "2026-12-05T19:05:52.000Z: default/memcached (256) -> fleet/maintenance (257) \
             memcache-denied DENIED (set a)"
        );
    }

    #[test]
    fn filters_become_the_monitor_query() {
        let args = ObserveArgs {
            from_labels: vec!["app=luke".into()],
            to_identities: vec![256],
            verdicts: vec![VerdictArg::Denied, VerdictArg::Audit],
            entry_types: vec![TypeArg::Request, TypeArg::Denied],
            l7: vec!["keys=a b".into()],
            last: Some(5),
            ..ObserveArgs::default()
        };
        assert_eq!(
            args.query(),
            "from_label=app%3Dluke&l7=keys%3Da%20b&to_identity=256&verdict=DENIED\
             &verdict=AUDIT&type=request&type=denied&last=5&follow=false"
        );
        assert!(!args.live());
        assert!(ObserveArgs::default().live());
        assert_eq!(ObserveArgs::default().query(), "");
        let follow = ObserveArgs {
            follow: true,
            ..ObserveArgs::default()
        };
        assert!(follow.live());
        assert_eq!(follow.query(), "", "live is the agent's default");
    }
}
