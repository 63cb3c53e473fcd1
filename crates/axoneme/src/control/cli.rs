//! The command line's client side: `axoneme policy|endpoint|identity|listener|redirect|observe|
//! access-log|metrics|status|version`, shaped like Cilium's CLI, talking to a running agent's
//! REST API.
//!
//! Each command is one API call (or a stream, for `observe`, in [`observe`](super::observe))
//! and a rendering: a table for people (headers optional), or the API's JSON or YAML with
//! `-o json|yaml`; `policy suggest` and `policy diff` read access-log files when given them,
//! and need no agent then.
//! Errors come back as one line for `main` to print.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpStream, UnixStream};

use crate::config::DEFAULT_API_SOCKET;
use crate::control::observe::{self, ObserveArgs};
use crate::control::status_view;

/// How results are shown.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Output {
    /// Aligned columns, for people.
    #[default]
    Table,
    /// The API's JSON, for scripts.
    Json,
    /// The API's answer as YAML.
    Yaml,
}

/// Where the agent's API is, and how to show results.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The agent's API: a Unix socket path, or http://HOST:PORT.
    #[arg(long, global = true, env = "AXONEME_API", default_value = DEFAULT_API_SOCKET, help_heading = GLOBAL)]
    pub api: String,
    /// Bearer token for a TCP API.
    #[arg(long, global = true, env = "AXONEME_TOKEN", hide_env_values = true, help_heading = GLOBAL)]
    pub token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table, help_heading = GLOBAL)]
    pub output: Output,
    /// Tables without their header line.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_headers: bool,
}

/// The heading that gathers the options every command takes, apart from each command's own.
const GLOBAL: &str = "Global options";

const POLICY_EXAMPLES: &str = "\
Examples:
  axoneme policy import deathstar.yaml
  axoneme policy get                 # every policy, and the revision
  axoneme policy get rule1           # one policy as YAML (-o json for JSON)
  axoneme policy trace --src-labels app=luke --dst-endpoint cache --dport 11211 command=get";

const ENDPOINT_EXAMPLES: &str = "\
Examples:
  axoneme endpoint list
  axoneme endpoint get cache -o yaml
  axoneme endpoint add luke --ip 10.0.0.21 --label app=luke";

const IDENTITY_EXAMPLES: &str = "\
Examples:
  axoneme identity list --no-headers
  axoneme identity get 256";

/// The client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Manage policies.
    #[command(subcommand, after_help = POLICY_EXAMPLES)]
    Policy(PolicyCommand),
    /// Manage endpoints.
    #[command(subcommand, after_help = ENDPOINT_EXAMPLES)]
    Endpoint(EndpointCommand),
    /// Show identities.
    #[command(subcommand, after_help = IDENTITY_EXAMPLES)]
    Identity(IdentityCommand),
    /// Manage listeners.
    #[command(subcommand)]
    Listener(ListenerCommand),
    /// Show, install or remove the transparent redirection rules (nftables table `inet
    /// axoneme`) of an agent that manages them.
    #[command(subcommand)]
    Redirect(RedirectCommand),
    /// Watch flows as they pass (or replay recent ones): a line each, or -o json entries.
    #[command(visible_alias = "monitor")]
    Observe(Box<ObserveArgs>),
    /// Manage the access-log file.
    #[command(subcommand)]
    AccessLog(AccessLogCommand),
    /// Show metrics.
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Show the agent's status.
    #[command(
        after_help = "Examples:\n  axoneme status\n  axoneme status --verbose\n  axoneme status -o json"
    )]
    Status {
        /// Also each listener and each controller, a line each.
        #[arg(long)]
        verbose: bool,
    },
    /// Show the client's version and the agent's.
    Version {
        /// Only the client's version; the agent is not asked.
        #[arg(long)]
        client: bool,
    },
    /// Show this node's view of the cluster (cluster mode).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `axoneme cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The kvstore's members and health, the revision this node has seen, and whether its
    /// view is stale.
    Status,
    /// The endpoints the other nodes publish, with the identities their addresses resolve to
    /// here.
    Endpoints,
}

/// `axoneme policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Import policies from files (YAML or JSON).
    Import {
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check policies without importing them.
    Validate {
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show every policy, or one (as YAML, with the revision).
    Get {
        /// A policy name.
        name: Option<String>,
    },
    /// Delete an imported policy, or all of them.
    Delete {
        /// A policy name.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Delete every imported policy.
        #[arg(long)]
        all: bool,
    },
    /// Write the least-privilege policy for the requests access-log files recorded (offline:
    /// no agent needed).
    Suggest(crate::suggest::SuggestArgs),
    /// Say which requests access-log files recorded a policy would deny, grouped (offline).
    Diff(crate::suggest::DiffArgs),
    /// Say whether a remote may reach an endpoint, and a request pass, and by which rule.
    Trace {
        /// The remote's address.
        #[arg(long = "src-address", conflicts_with = "src_labels")]
        src_address: Option<std::net::IpAddr>,
        /// Labels of the remote (an endpoint with exactly these labels, `k8s:` prefixes and
        /// its namespace label optional), as key=value.
        #[arg(long = "src-labels", value_delimiter = ',')]
        src_labels: Vec<String>,
        /// The guarded endpoint.
        #[arg(long = "dst-endpoint")]
        endpoint: String,
        /// The upstream's port.
        #[arg(long = "dport")]
        port: u16,
        /// Trace the endpoint's egress instead of its ingress.
        #[arg(long)]
        egress: bool,
        /// The listener the connection arrives on (its l7proto and what it guards count).
        #[arg(long)]
        listener: Option<String>,
        /// L7 fields of the request, e.g. command=get key=alliance/fleet/x.
        fields: Vec<String>,
    },
}

/// `axoneme endpoint ...`
#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// List endpoints.
    List,
    /// Show one endpoint.
    Get {
        /// Its name.
        name: String,
    },
    /// Add or replace an endpoint.
    Add {
        /// Its name.
        name: String,
        /// Its addresses.
        #[arg(long = "ip", required = true)]
        ips: Vec<std::net::IpAddr>,
        /// Its labels, as key=value.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Its namespace (default: `default`).
        #[arg(long)]
        namespace: Option<String>,
        /// Audit mode: forward what policy would deny, and log it as audited.
        #[arg(long)]
        audit: bool,
    },
    /// Delete an endpoint.
    Delete {
        /// Its name.
        name: String,
    },
}

/// `axoneme identity ...`
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// List identities.
    List,
    /// Show one identity: its labels and endpoints.
    Get {
        /// Its number.
        id: u32,
    },
}

/// `axoneme listener ...`
#[derive(Debug, Subcommand)]
pub enum ListenerCommand {
    /// List listeners.
    List,
    /// Start a listener (or replace one).
    Add {
        /// Its name.
        name: String,
        /// The address to accept on.
        #[arg(long)]
        listen: String,
        /// proxy (clients dial it), tproxy or redirect (transparent).
        #[arg(long, default_value = "proxy")]
        mode: String,
        /// Where connections go (proxy mode).
        #[arg(long)]
        upstream: Option<String>,
        /// The endpoint it guards (a transparent listener without one guards every endpoint).
        #[arg(long)]
        endpoint: Option<String>,
        /// ingress or egress.
        #[arg(long, default_value = "ingress")]
        direction: String,
        /// The parser to use.
        #[arg(long)]
        l7proto: Option<String>,
        /// tproxy mode: connect upstream from the client's address.
        #[arg(long)]
        keep_client_address: bool,
        /// Most connections open at once through it; more are refused.
        #[arg(long)]
        max_connections: Option<usize>,
    },
    /// Stop a listener; its connections get the drain time to finish.
    Delete {
        /// Its name.
        name: String,
    },
}

/// `axoneme redirect ...`
#[derive(Debug, Subcommand)]
pub enum RedirectCommand {
    /// Show the redirects policy calls for and the listeners receiving them.
    List,
    /// Install the rules now, and keep them in step with policy again after a flush.
    Apply,
    /// Remove the rules; they stay removed until applied again.
    Flush,
}

/// `axoneme access-log ...`
#[derive(Debug, Subcommand)]
pub enum AccessLogCommand {
    /// Open the access-log file's path anew, after it was moved for rotation.
    Reopen,
}

/// `axoneme metrics ...`
#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// List metrics and their values.
    List,
}

/// Why the agent's API socket at `path` could not be connected to (`error`), and what to do
/// about it: no agent listening (no socket, or one an agent left behind) or no permission (the
/// socket is its agent's user's only).
fn unreachable_socket(path: &str, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    use std::os::unix::fs::MetadataExt;
    match error.kind() {
        ErrorKind::NotFound => format!(
            "no agent is listening at {path}: the socket does not exist (start one with `axoneme \
             run`, or give its api.socket with --api or AXONEME_API)"
        ),
        ErrorKind::ConnectionRefused => format!(
            "no agent is listening at {path}: the socket is left from an agent that stopped \
             (start one with `axoneme run`)"
        ),
        ErrorKind::PermissionDenied => {
            let owner = std::fs::metadata(path)
                .map(|m| format!(" (owner uid {}, mode {:o})", m.uid(), m.mode() & 0o777))
                .unwrap_or_default();
            format!(
                "permission denied on the API socket {path}{owner}: only the agent's user may \
                 use it; run the command as that user (e.g. with sudo)"
            )
        }
        _ => format!("cannot reach the API at {path}: {error}"),
    }
}

/// A connection to the agent's API.
pub(crate) struct Client {
    api: String,
    token: Option<String>,
}

impl Client {
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Response<Incoming>> {
        let (content_type, body) = body.unwrap_or(("application/json", Vec::new()));
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "axoneme")
            .header("content-type", content_type);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Full::new(hyper::body::Bytes::from(body)))?;
        macro_rules! over {
            ($stream:expr) => {{
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new($stream)).await?;
                tokio::spawn(connection);
                Ok(sender.send_request(request).await?)
            }};
        }
        match self.api.strip_prefix("http://") {
            Some(address) => {
                let stream = TcpStream::connect(address)
                    .await
                    .with_context(|| format!("cannot reach the API at {}", self.api))?;
                over!(stream)
            }
            None => {
                let stream = UnixStream::connect(&self.api)
                    .await
                    .map_err(|error| anyhow::anyhow!(unreachable_socket(&self.api, &error)))?;
                over!(stream)
            }
        }
    }

    /// One call; the answer's JSON, or its error message.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Value> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if !status.is_success() {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!("{message}");
        }
        Ok(value)
    }

    async fn text(&self, path: &str) -> anyhow::Result<String> {
        match self.call(Method::GET, path, None).await? {
            Value::String(text) => Ok(text),
            other => Ok(other.to_string()),
        }
    }
}

fn key_values(pairs: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => bail!("{what} {pair:?}: expected key=value"),
        })
        .collect()
}

/// Runs a client command against the agent.
pub async fn run(args: ApiArgs, command: ClientCommand) -> anyhow::Result<()> {
    let client = Client {
        api: args.api,
        token: args.token,
    };
    let output = args.output;
    let headers = !args.no_headers;
    let json_out = !matches!(output, Output::Table);
    let value = match command {
        ClientCommand::Policy(PolicyCommand::Get { name: Some(name) }) if !json_out => {
            let answer = client
                .call(Method::GET, &format!("/v1/policy/{}", encode(&name)), None)
                .await?;
            print!("{}", policy_yaml(&answer)?);
            return Ok(());
        }
        ClientCommand::Policy(command) => policy(&client, command, json_out).await?,
        ClientCommand::Endpoint(EndpointCommand::List) => {
            let endpoints = client.call(Method::GET, "/v1/endpoint", None).await?;
            if !json_out {
                println!("{}", render_endpoints(&endpoints, headers));
                return Ok(());
            }
            endpoints
        }
        ClientCommand::Endpoint(EndpointCommand::Get { name }) => {
            client
                .call(
                    Method::GET,
                    &format!("/v1/endpoint/{}", encode(&name)),
                    None,
                )
                .await?
        }
        ClientCommand::Identity(IdentityCommand::Get { id }) => {
            client
                .call(Method::GET, &format!("/v1/identity/{id}"), None)
                .await?
        }
        ClientCommand::Endpoint(EndpointCommand::Add {
            name,
            ips,
            labels,
            namespace,
            audit,
        }) => {
            let mut body = json!({ "ips": ips, "labels": key_values(&labels, "label")?, "policyAuditMode": audit });
            if let Some(namespace) = namespace {
                body["namespace"] = Value::String(namespace);
            }
            client
                .call(
                    Method::PUT,
                    &format!("/v1/endpoint/{}", encode(&name)),
                    Some(("application/json", body.to_string().into_bytes())),
                )
                .await?
        }
        ClientCommand::Endpoint(EndpointCommand::Delete { name }) => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/endpoint/{}", encode(&name)),
                    None,
                )
                .await?
        }
        ClientCommand::Identity(IdentityCommand::List) => {
            client.call(Method::GET, "/v1/identity", None).await?
        }
        ClientCommand::Listener(ListenerCommand::List) => {
            client.call(Method::GET, "/v1/listener", None).await?
        }
        ClientCommand::Listener(ListenerCommand::Add {
            name,
            listen,
            mode,
            upstream,
            endpoint,
            direction,
            l7proto,
            keep_client_address,
            max_connections,
        }) => {
            let mut body = json!({ "listen": listen, "mode": mode, "direction": direction });
            for (key, value) in [
                ("upstream", upstream),
                ("endpoint", endpoint),
                ("l7proto", l7proto),
            ] {
                if let Some(value) = value {
                    body[key] = Value::String(value);
                }
            }
            if keep_client_address {
                body["keepClientAddress"] = Value::Bool(true);
            }
            if let Some(max) = max_connections {
                body["maxConnections"] = json!(max);
            }
            client
                .call(
                    Method::PUT,
                    &format!("/v1/listener/{}", encode(&name)),
                    Some(("application/json", body.to_string().into_bytes())),
                )
                .await?
        }
        ClientCommand::Listener(ListenerCommand::Delete { name }) => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/listener/{}", encode(&name)),
                    None,
                )
                .await?
        }
        ClientCommand::Redirect(command) => {
            let method = match command {
                RedirectCommand::List => Method::GET,
                RedirectCommand::Apply => Method::PUT,
                RedirectCommand::Flush => Method::DELETE,
            };
            client.call(method, "/v1/redirect", None).await?
        }
        ClientCommand::Observe(args) => return observe::observe(&client, &args, output).await,
        ClientCommand::Version { client: true } => json!({ "client": env!("CARGO_PKG_VERSION") }),
        ClientCommand::Version { client: false } => {
            let agent = client
                .call(Method::GET, "/v1/version", None)
                .await
                .map_err(|error| {
                    error.context(format!(
                        "client version {}; the agent's version is unknown",
                        env!("CARGO_PKG_VERSION")
                    ))
                })?;
            if !json_out {
                println!("client: {}", env!("CARGO_PKG_VERSION"));
                println!("agent: {}", cell(&agent["version"]));
                return Ok(());
            }
            json!({ "client": env!("CARGO_PKG_VERSION"), "agent": agent["version"] })
        }
        ClientCommand::AccessLog(AccessLogCommand::Reopen) => {
            client
                .call(Method::POST, "/v1/access-log/reopen", None)
                .await?
        }
        ClientCommand::Metrics(MetricsCommand::List) => {
            let text = client.text("/v1/metrics").await?;
            return print_metrics(&text, output, headers);
        }
        ClientCommand::Status { verbose } => {
            let status = client.call(Method::GET, "/v1/status", None).await?;
            if matches!(output, Output::Table) {
                println!("{}", status_view::render(&status, verbose));
                return Ok(());
            }
            status
        }
        ClientCommand::Cluster(ClusterCommand::Status) => {
            client.call(Method::GET, "/v1/cluster", None).await?
        }
        ClientCommand::Cluster(ClusterCommand::Endpoints) => {
            client
                .call(Method::GET, "/v1/cluster/endpoints", None)
                .await?
        }
    };
    print_value(&value, output, headers)
}

/// Prints an API answer in `output`'s form.
fn print_value(value: &Value, output: Output, headers: bool) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Output::Table => println!("{}", render(value, headers)),
    }
    Ok(())
}

/// One policy for people: its document as YAML (importable as it is), after comments naming
/// its revision and where it came from.
fn policy_yaml(answer: &Value) -> anyhow::Result<String> {
    let mut text = format!("# revision: {}\n", cell(&answer["revision"]));
    if let Some(source) = answer["source"].as_str() {
        text.push_str(&format!("# source: {source}\n"));
    }
    text.push_str(&serde_yaml::to_string(&answer["document"])?);
    Ok(text)
}

/// The observed requests `policy suggest` and `policy diff` read: the access-log files given,
/// or else the running agent's recent flows (every request entry its ring holds).
async fn observed_logs(
    client: &Client,
    files: &[PathBuf],
) -> anyhow::Result<Vec<crate::suggest::LogText>> {
    if !files.is_empty() {
        return Ok(crate::suggest::LogText::read_files(files)?);
    }
    let path = format!("/v1/monitor?type=request&last={}&follow=false", usize::MAX);
    let response = client.send(Method::GET, &path, None).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        bail!(
            "the agent's recent flows: {}",
            value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the agent refused to replay them")
        );
    }
    let text = String::from_utf8(bytes.to_vec()).context("the agent's recent flows")?;
    Ok(vec![crate::suggest::LogText {
        name: "the agent's recent flows".to_owned(),
        text,
    }])
}

async fn policy(client: &Client, command: PolicyCommand, json_out: bool) -> anyhow::Result<Value> {
    match command {
        PolicyCommand::Import { files } => import(client, &files, false, json_out).await,
        PolicyCommand::Validate { files } => import(client, &files, true, json_out).await,
        PolicyCommand::Suggest(args) => {
            let logs = observed_logs(client, &args.from_log).await?;
            let yaml = crate::suggest::suggest_from(&args, &logs)?;
            Ok(Value::String(yaml.trim_end().to_owned()))
        }
        PolicyCommand::Diff(args) => {
            let logs = observed_logs(client, &args.from_log).await?;
            let registry = crate::builtin_protocols(&crate::config::ProtocolsConfig::default());
            Ok(Value::String(crate::suggest::diff_from(
                &args, &logs, &registry,
            )?))
        }
        PolicyCommand::Get { name: None } => client.call(Method::GET, "/v1/policy", None).await,
        PolicyCommand::Get { name: Some(name) } => {
            client
                .call(Method::GET, &format!("/v1/policy/{}", encode(&name)), None)
                .await
        }
        PolicyCommand::Delete {
            name: Some(name), ..
        } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/policy/{}", encode(&name)),
                    None,
                )
                .await
        }
        PolicyCommand::Delete { name: None, .. } => {
            client.call(Method::DELETE, "/v1/policy", None).await
        }
        PolicyCommand::Trace {
            src_address,
            src_labels,
            endpoint,
            port,
            egress,
            listener,
            fields,
        } => {
            let mut body = json!({ "endpoint": endpoint, "port": port, "egress": egress, "l7": key_values(&fields, "field")? });
            if let Some(listener) = listener {
                body["listener"] = json!(listener);
            }
            match (src_address, src_labels.is_empty()) {
                (Some(address), _) => body["address"] = json!(address),
                (None, false) => body["labels"] = json!(key_values(&src_labels, "label")?),
                (None, true) => bail!("give --src-address or --src-labels"),
            }
            client
                .call(
                    Method::POST,
                    "/v1/policy-trace",
                    Some(("application/json", body.to_string().into_bytes())),
                )
                .await
        }
    }
}

/// Imports (or validates) `files` in one request that names each file, so that errors and
/// warnings name the file. Warnings go to standard error, one line each.
async fn import(
    client: &Client,
    files: &[PathBuf],
    validate: bool,
    json_out: bool,
) -> anyhow::Result<Value> {
    let mut texts = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        texts.push(json!({ "source": file.display().to_string(), "text": text }));
    }
    let path = if validate {
        "/v1/policy?validate=true"
    } else {
        "/v1/policy"
    };
    let body = json!({ "files": texts }).to_string().into_bytes();
    let mut answer = client
        .call(Method::PUT, path, Some(("application/json", body)))
        .await?;
    for warning in answer["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", warning.as_str().unwrap_or_default());
    }
    if !json_out {
        if let Some(fields) = answer.as_object_mut() {
            fields.remove("warnings");
        }
    }
    Ok(answer)
}

fn print_metrics(text: &str, output: Output, headers: bool) -> anyhow::Result<()> {
    let samples: Vec<(String, String)> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            line.rsplit_once(' ')
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
        })
        .collect();
    if let Output::Table = output {
        let rows: Vec<Vec<String>> = samples.into_iter().map(|(m, v)| vec![m, v]).collect();
        println!("{}", table(&["METRIC", "VALUE"], &rows, headers));
        return Ok(());
    }
    let list: Vec<Value> = samples
        .iter()
        .map(|(m, v)| json!({ "metric": m, "value": v }))
        .collect();
    print_value(&Value::Array(list), output, headers)
}

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Renders an API answer for people: arrays of objects as tables (with a header line when
/// `headers`), objects as key: value lines.
fn render(value: &Value, headers: bool) -> String {
    match value {
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
            // Names first: they are what people look for.
            let mut columns: Vec<String> = Vec::new();
            if items.iter().any(|item| item.get("name").is_some()) {
                columns.push("name".into());
            }
            for item in items {
                for key in item.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !columns.contains(key) && key != "document" {
                        columns.push(key.clone());
                    }
                }
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|item| {
                    columns
                        .iter()
                        .map(|c| cell(item.get(c).unwrap_or(&Value::Null)))
                        .collect()
                })
                .collect();
            let names: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            table(&names, &rows, headers)
        }
        Value::Object(fields) => fields
            .iter()
            .map(|(key, value)| match value {
                Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
                    format!("{key}:\n{}", render(value, headers))
                }
                _ => format!("{key}: {}", cell(value)),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Array(items) if items.is_empty() => "(none)".into(),
        other => cell(other),
    }
}

/// Renders `endpoint list` with Cilium's columns for policy enforcement.
fn render_endpoints(endpoints: &Value, headers: bool) -> String {
    let rows: Vec<Vec<String>> = endpoints
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            [
                "name",
                "namespace",
                "policy_ingress_enforcement",
                "policy_egress_enforcement",
                "policyAuditMode",
                "identity",
                "labels",
                "ips",
            ]
            .iter()
            .map(|key| cell(e.get(*key).unwrap_or(&Value::Null)))
            .collect()
        })
        .collect();
    table(
        &[
            "ENDPOINT",
            "NAMESPACE",
            "POLICY (ingress) ENFORCEMENT",
            "POLICY (egress) ENFORCEMENT",
            "AUDIT",
            "IDENTITY",
            "LABELS",
            "IPS",
        ],
        &rows,
        headers,
    )
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// Aligns `rows` in columns under `headers`, the header line left out unless `show_headers`
/// (the widths still count it, so output with and without it aligns alike).
fn table(headers: &[&str], rows: &[Vec<String>], show_headers: bool) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_owned()
    };
    let mut out = Vec::new();
    if show_headers {
        out.push(line(headers.to_vec()));
    }
    out.extend(
        rows.iter()
            .map(|row| line(row.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `send` says when it cannot connect to the socket at `path`.
    async fn connect_error(path: &std::path::Path) -> String {
        let client = Client {
            api: path.to_str().unwrap().to_owned(),
            token: None,
        };
        match client.send(Method::GET, "/v1/status", None).await {
            Ok(_) => panic!("{} answered", path.display()),
            Err(error) => error.to_string(),
        }
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_says_no_agent_is_listening_and_how_to_start_one() {
        let dir = std::env::temp_dir().join(format!("axoneme-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let missing = connect_error(&path).await;
        assert!(
            missing.starts_with(&format!("no agent is listening at {}", path.display()))
                && missing.contains("the socket does not exist")
                && missing.contains("axoneme run"),
            "{missing}"
        );
        // An agent that stopped leaves its socket file behind.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let left = connect_error(&path).await;
        assert!(
            left.contains("the socket is left from an agent that stopped")
                && left.contains("axoneme run"),
            "{left}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_socket_refused_for_permission_names_its_owner_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("axoneme-cli-perm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&path).unwrap());
        // The kernel's refusal as a user other than the owner gets it (tests may run as root,
        // whom no mode refuses).
        let refused = std::io::Error::from_raw_os_error(libc::EACCES);
        let message = unreachable_socket(path.to_str().unwrap(), &refused);
        assert_eq!(
            message,
            format!(
                "permission denied on the API socket {} (owner uid {uid}, mode 600): only the \
                 agent's user may use it; run the command as that user (e.g. with sudo)",
                path.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
