//! The live source of policy and identities: a running Axoneme agent's API socket. It reads the
//! agent's run and policy revision (`GET /v1/status`), and when either changed, the policies
//! (`GET /v1/policy`, each as the document the agent holds), the endpoints
//! (`GET /v1/endpoint`) and the identity numbers the agent gave their label sets
//! (`GET /v1/identity`), so that the filter's verdicts and log name the agent's identities. It
//! speaks just enough HTTP/1.1 over the Unix socket for these requests, and decides nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axoneme_policy::{parse_policies, ClusterInputs, EndpointSpec, Policy, PolicyError, Snapshot};
use axoneme_sdk::Registry;
use serde::Deserialize;

/// How long one request to the agent may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest response accepted: the agent's policy text limit with room for JSON.
const MAX_RESPONSE: u64 = 64 << 20;

/// Why the agent's policy could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// The socket could not be reached or the exchange failed.
    #[error("agent API {socket}: {path}: {source}")]
    Io {
        socket: String,
        path: &'static str,
        source: std::io::Error,
    },
    /// The agent answered something other than 200 with JSON.
    #[error("agent API {socket}: {path}: {message}")]
    Response {
        socket: String,
        path: &'static str,
        message: String,
    },
    /// The policies the agent holds do not parse here.
    #[error("agent API {socket}: policies: {source}")]
    Policy { socket: String, source: PolicyError },
}

/// What the agent holds at one revision.
pub(crate) struct AgentState {
    pub(crate) revision: u64,
    policies: Vec<Policy>,
    endpoints: Vec<EndpointSpec>,
    /// The agent's number of each label set (reserved identities left out).
    numbers: BTreeMap<Vec<String>, u32>,
}

impl AgentState {
    /// Compiles what the agent holds, each label set numbered as the agent numbers it; a label
    /// set the agent gave no number (its state changed between two requests) fails the build,
    /// and the policy in force stays.
    pub(crate) fn compile(
        self,
        host_ips: &[IpAddr],
        registry: &Registry,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, PolicyError> {
        let inputs = ClusterInputs {
            remote: &[],
            numbers: Some(&self.numbers),
        };
        Snapshot::build_in_cluster(
            self.policies,
            &self.endpoints,
            inputs,
            host_ips,
            registry,
            previous,
        )
    }
}

/// The first number that is not a reserved identity's.
const FIRST_ENDPOINT_IDENTITY: u32 = 256;

#[derive(Deserialize)]
struct IdentityView {
    id: u32,
    labels: Vec<String>,
}

#[derive(Deserialize)]
struct Status {
    policy_revision: u64,
    #[serde(default)]
    instance: Option<String>,
}

/// Which policy an agent holds: its revision, in the run of the agent that numbered it (an
/// agent started again counts its revisions from the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentVersion {
    /// The agent's name of its run (`None` from an agent that does not tell it).
    pub(crate) instance: Option<String>,
    pub(crate) revision: u64,
}

#[derive(Deserialize)]
struct PolicyList {
    revision: u64,
    policies: Vec<PolicyView>,
}

#[derive(Deserialize)]
struct PolicyView {
    document: serde_json::Value,
}

#[derive(Deserialize)]
struct EndpointView {
    name: String,
    namespace: String,
    ips: Vec<IpAddr>,
    labels: BTreeMap<String, String>,
    /// Audit mode: the filter forwards what the endpoint's policy would deny, as the agent does.
    #[serde(default, rename = "policyAuditMode")]
    policy_audit_mode: bool,
}

/// A running agent, reached through its API socket.
pub(crate) struct AgentSource {
    socket: PathBuf,
}

impl AgentSource {
    pub(crate) fn new(socket: PathBuf) -> AgentSource {
        AgentSource { socket }
    }

    /// The agent's run and policy revision now.
    pub(crate) fn version(&self) -> Result<AgentVersion, SourceError> {
        let status: Status = self.get_json("/v1/status")?;
        Ok(AgentVersion {
            instance: status.instance,
            revision: status.policy_revision,
        })
    }

    /// The agent's policies and endpoints now.
    pub(crate) fn fetch(&self) -> Result<AgentState, SourceError> {
        let list: PolicyList = self.get_json("/v1/policy")?;
        let endpoints: Vec<EndpointView> = self.get_json("/v1/endpoint")?;
        let identities: Vec<IdentityView> = self.get_json("/v1/identity")?;
        let policies = if list.policies.is_empty() {
            Vec::new()
        } else {
            let documents: Vec<serde_json::Value> =
                list.policies.into_iter().map(|p| p.document).collect();
            let text = serde_json::json!({ "kind": "List", "items": documents }).to_string();
            let source = format!("agent {}", self.socket.display());
            parse_policies(&source, &text).map_err(|source| SourceError::Policy {
                socket: self.shown(),
                source,
            })?
        };
        let endpoints = endpoints
            .into_iter()
            .map(|e| EndpointSpec {
                name: e.name,
                ips: e.ips,
                labels: e.labels,
                namespace: Some(e.namespace),
                policy_audit_mode: e.policy_audit_mode,
            })
            .collect();
        let numbers = identities
            .into_iter()
            .filter(|identity| identity.id >= FIRST_ENDPOINT_IDENTITY)
            .map(|identity| (identity.labels, identity.id))
            .collect();
        Ok(AgentState {
            revision: list.revision,
            policies,
            endpoints,
            numbers,
        })
    }

    fn shown(&self) -> String {
        self.socket.display().to_string()
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &'static str) -> Result<T, SourceError> {
        let body = get(&self.socket, path).map_err(|source| SourceError::Io {
            socket: self.shown(),
            path,
            source,
        })?;
        let body = body.map_err(|message| SourceError::Response {
            socket: self.shown(),
            path,
            message,
        })?;
        serde_json::from_slice(&body).map_err(|e| SourceError::Response {
            socket: self.shown(),
            path,
            message: format!("unexpected JSON: {e}"),
        })
    }
}

/// `GET path` over the Unix socket `socket`: the body of a 200 response, or what else came back.
fn get(socket: &Path, path: &str) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: axoneme\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut response)?;
    Ok(parse_response(&response))
}

/// The body of a complete HTTP/1.1 response if its status is 200.
fn parse_response(response: &[u8]) -> Result<Vec<u8>, String> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the response has no end of headers")?;
    let head = String::from_utf8_lossy(&response[..end]);
    let body = &response[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!(
            "answered {status:?}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    let chunked = lines.any(|line| {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        name.trim().eq_ignore_ascii_case("transfer-encoding")
            && value.trim().eq_ignore_ascii_case("chunked")
    });
    if chunked {
        // The agent's API sends whole JSON bodies with their length.
        return Err("a chunked response, which the agent's API does not send".to_owned());
    }
    Ok(body.to_vec())
}
