//! The REST API (JSON under `/v1`): policies, endpoints, identities, listeners, the live access
//! log, health, status and metrics, on a Unix socket and optionally on TCP with a bearer token.
//!
//! Handlers translate HTTP to calls on the [`Agent`] and its state, and errors to 4xx answers
//! that name the problem; they hold no state of their own. A request body longer than
//! `api.maxBodyBytes` is refused with a 413 naming that limit, before any handler runs. The
//! Unix socket is never reachable with a mode other than 0600, and the TCP bearer token is
//! compared in constant time. The OpenAPI document describing every route is `openapi.json`
//! beside this file, served at `/v1/openapi.json`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axoneme_cluster::ClusterError;
use axoneme_policy::{ConnectionVerdict, EndpointSpec};
use axoneme_sdk::{Direction, RequestPolicy};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State as Shared};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::{TcpListener, UnixListener};

use crate::config::{direction_name, ListenerConfig};
use crate::control::cluster::{ClusterStatus, PolicyWriteError};
use crate::control::state::{PolicyText, State, StateError};
use crate::control::web::{self, Admission, Credentials};
use crate::proxy::connection::{Ends, Guards, Route};
use crate::proxy::decision::{decide, Outcome};
use crate::proxy::sockets::UpstreamOptions;
use crate::redirect::RedirectError;
use crate::telemetry::flow_filter::{parse_query, QueryContext, QueryError, WatchQuery};
use crate::telemetry::monitor;
use crate::telemetry::throttle::throttled_warn;
use crate::{Agent, ListenerError};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// An error answer: a status and a message naming the problem.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    /// An answer with `status` and `message`.
    pub(crate) fn new(status: StatusCode, message: String) -> ApiError {
        ApiError(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StateError> for ApiError {
    fn from(error: StateError) -> Self {
        let status = match error {
            StateError::PolicyNotFound(_) | StateError::EndpointNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            StateError::PolicyInFile { .. } => StatusCode::CONFLICT,
            StateError::Identities(_) => StatusCode::SERVICE_UNAVAILABLE,
            StateError::Policy(_) | StateError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        ApiError(status, error.to_string())
    }
}

impl From<PolicyWriteError> for ApiError {
    fn from(error: PolicyWriteError) -> Self {
        let status = match error {
            PolicyWriteError::State(error) => return error.into(),
            PolicyWriteError::Kvstore {
                source: ClusterError::InvalidPolicyName { .. },
                ..
            } => StatusCode::BAD_REQUEST,
            PolicyWriteError::Refused(_) => StatusCode::CONFLICT,
            PolicyWriteError::Stale { .. }
            | PolicyWriteError::Kvstore { .. }
            | PolicyWriteError::NotApplied { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, error.to_string())
    }
}

impl From<ListenerError> for ApiError {
    fn from(error: ListenerError) -> Self {
        let status = match error {
            ListenerError::NotFound(_) => StatusCode::NOT_FOUND,
            ListenerError::Invalid(_) | ListenerError::Bind(_) => StatusCode::BAD_REQUEST,
        };
        ApiError(status, error.to_string())
    }
}

impl From<RedirectError> for ApiError {
    fn from(error: RedirectError) -> Self {
        let status = match error {
            RedirectError::NotManaged => StatusCode::CONFLICT,
            RedirectError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, error.to_string())
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Runs a change of the agent's state on a blocking thread: parsing and compiling policy can
/// take seconds, which must not hold up the runtime that serves the API and the listeners.
async fn change<T: Send + 'static>(
    agent: &Agent,
    change: impl FnOnce(&State) -> std::result::Result<T, StateError> + Send + 'static,
) -> Result<T> {
    let state = Arc::clone(agent.state());
    match tokio::task::spawn_blocking(move || change(&state)).await {
        Ok(result) => Ok(result?),
        Err(error) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the change failed: {error}"),
        )),
    }
}

type Result<T> = std::result::Result<T, ApiError>;

/// The routes of the API.
pub fn router(agent: Arc<Agent>) -> Router {
    let limit = agent.api_max_body_bytes;
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/version", get(version))
        .route("/v1/status", get(status))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/cluster/endpoints", get(cluster_endpoints))
        .route("/v1/metrics", get(metrics))
        .route(
            "/v1/policy",
            get(list_policies)
                .put(import_policies)
                .delete(delete_all_policies),
        )
        .route("/v1/policy/{name}", get(get_policy).delete(delete_policy))
        .route("/v1/policy-trace", post(trace))
        .route("/v1/endpoint", get(list_endpoints))
        .route(
            "/v1/endpoint/{name}",
            get(get_endpoint).put(put_endpoint).delete(delete_endpoint),
        )
        .route("/v1/identity", get(list_identities))
        .route("/v1/identity/{id}", get(get_identity))
        .route("/v1/listener", get(list_listeners))
        .route(
            "/v1/listener/{name}",
            get(get_listener).put(put_listener).delete(delete_listener),
        )
        .route(
            "/v1/redirect",
            get(list_redirects)
                .put(apply_redirects)
                .delete(flush_redirects),
        )
        .route("/v1/access-log/reopen", post(reopen_access_log))
        .route("/v1/monitor", get(monitor))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            limit_body(limit, request, next)
        }))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(agent)
}

/// Reads the request body whole, refusing one longer than `limit` bytes (by its announced
/// length when it has one, before reading it) with a 413 that names the limit.
async fn limit_body(limit: usize, request: Request, next: Next) -> Response {
    let too_large = || {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is longer than api.maxBodyBytes ({limit} bytes)"),
        )
        .into_response()
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let error = error.into_inner();
            if error.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            return bad_request(format!("the request body could not be read: {error}"))
                .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Serves the API on the Unix socket `path` (mode 0600), replacing a stale socket file.
pub async fn serve_unix(agent: Arc<Agent>, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!("api.socket: {} is in use by another agent", path.display());
        }
        std::fs::remove_file(path)?;
    }
    let listener = bind_private(path)
        .map_err(|e| anyhow::anyhow!("api.socket: cannot listen on {}: {e}", path.display()))?;
    tracing::info!(socket = %path.display(), "API listening");
    crate::control::http_server::serve(listener, router(Arc::clone(&agent)), &agent).await;
    Ok(())
}

/// Binds a Unix socket at `path` that nobody but its owner can ever connect to: it is bound in a
/// directory only the owner can enter, given mode 0600 there, and only then renamed to `path`
/// (a socket's mode follows the umask when it is bound; changing it at `path` would leave a
/// moment when others could connect). The mode at `path` is checked.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut private = path.as_os_str().to_owned();
    private.push(format!(".{}.bind", std::process::id()));
    let private = std::path::PathBuf::from(private);
    if private.exists() {
        std::fs::remove_dir_all(&private)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let inside = private.join(name);
    let bound = UnixListener::bind(&inside).and_then(|listener| {
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inside, path)?;
        Ok(listener)
    });
    let cleaned = std::fs::remove_dir_all(&private);
    let listener = bound?;
    cleaned?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode != 0o600 {
        return Err(std::io::Error::other(format!(
            "the socket has mode {mode:o}, not 600"
        )));
    }
    Ok(listener)
}

/// Whether `given` is `expected`, in a time that depends on their lengths only: every byte of
/// `expected` is compared whatever differs first, and a length difference is folded into the
/// same result, so that timing tells nothing about how much of a guess was right.
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        let other = given.get(index).copied().unwrap_or(0);
        difference |= usize::from(byte ^ other);
    }
    std::hint::black_box(difference) == 0
}

/// Serves the API and the flow view on TCP; every request must carry `Authorization: Bearer
/// <token>`, but for the flow view's login and assets and, on its own routes, the cookie its
/// login sets (see [`web`]).
pub async fn serve_tcp(
    agent: Arc<Agent>,
    listener: TcpListener,
    token: String,
) -> anyhow::Result<()> {
    let credentials = Arc::new(Credentials::new(&token).map_err(|error| {
        anyhow::anyhow!("drawing the flow view's session secret failed: {error}")
    })?);
    let server = Arc::clone(&agent);
    let shared = Arc::clone(&agent.shared);
    let app = router(Arc::clone(&agent))
        .merge(web::routes(agent))
        .merge(Arc::clone(&credentials).login_route())
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let (credentials, shared) = (Arc::clone(&credentials), Arc::clone(&shared));
            async move {
                let refusal = match credentials.admit(&request) {
                    Admission::Pass => return next.run(request).await,
                    Admission::LoginForm => web::login_form(),
                    Admission::Refuse => ApiError(
                        StatusCode::UNAUTHORIZED,
                        "missing or wrong bearer token".into(),
                    )
                    .into_response(),
                };
                shared
                    .metrics
                    .api_unauthorized
                    .fetch_add(1, Ordering::Relaxed);
                throttled_warn!(
                    shared.throttle,
                    "api_unauthorized",
                    method = %request.method(),
                    path = request.uri().path(),
                    "API request refused: missing or wrong bearer token"
                );
                refusal
            }
        }));
    tracing::info!(address = %listener.local_addr()?, "API listening on TCP");
    crate::control::http_server::serve(listener, app, &server).await;
    Ok(())
}

/// Serves Prometheus metrics at `/metrics`.
pub async fn serve_metrics(agent: Arc<Agent>, listener: TcpListener) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&agent));
    tracing::info!(address = %listener.local_addr()?, "metrics listening");
    crate::control::http_server::serve(listener, app, &agent).await;
    Ok(())
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The agent's version, as `axoneme version` shows it beside the client's.
async fn version() -> Json<Value> {
    Json(crate::telemetry::process::build_json())
}

async fn status(Shared(agent): Shared<Arc<Agent>>) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let m = agent.metrics();
    let endpoints = agent.state().endpoints();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "build": crate::telemetry::process::build_json(),
        "uptime_seconds": agent.uptime().as_secs(),
        "instance": agent.instance(),
        "policy_revision": agent.state().revision(),
        "policy": {
            "revision": agent.state().revision(),
            "policies": agent.state().policies().len(),
            "import_errors": agent.state().import_errors(),
        },
        "endpoints": {
            "total": endpoints.len(),
            "audit": endpoints.iter().filter(|e| e.policy_audit_mode).count(),
        },
        "listeners": agent.listeners(),
        "access_log": agent.access_log_status(),
        "monitor": agent.monitor_status(),
        "controllers": agent.controllers(),
        "cluster": agent.cluster().map(|cluster| {
            let status = cluster.status();
            json!({
                "cluster": status.cluster,
                "node": status.node,
                "stale": status.stale,
                "staleSince": status.stale_since,
                "revision": status.revision,
                "members": status.members.len(),
                "members_healthy": status.members.iter().filter(|m| m.healthy).count(),
            })
        }),
        "counters": {
            "connections_active": m.connections_active.load(Relaxed),
            "connections_total": m.connections_total.load(Relaxed),
            "connections_refused": m.connections_refused.load(Relaxed),
            "parser_panics": m.parser_panics.load(Relaxed),
            "policy_import_errors": agent.state().import_errors(),
            "access_log_dropped": agent.access_log_dropped(),
            "monitor_dropped": agent.monitor().dropped(),
        },
    }))
}

/// This node's view of the cluster; 409 without cluster mode, like other routes of features
/// the configuration leaves off.
async fn cluster_status(Shared(agent): Shared<Arc<Agent>>) -> Result<Json<ClusterStatus>> {
    match agent.cluster() {
        Some(cluster) => Ok(Json(cluster.status())),
        None => Err(cluster_mode_off()),
    }
}

/// An endpoint another node hosts, as `GET /v1/cluster/endpoints` shows it.
#[derive(Serialize)]
struct RemoteEndpointView {
    /// The node that publishes it.
    node: String,
    /// Its name on that node.
    name: String,
    namespace: String,
    /// The identity its addresses resolve to here; none when the cluster has no number for
    /// its labels yet.
    identity: Option<u32>,
    ips: Vec<IpAddr>,
    labels: BTreeMap<String, String>,
}

async fn cluster_endpoints(
    Shared(agent): Shared<Arc<Agent>>,
) -> Result<Json<Vec<RemoteEndpointView>>> {
    if agent.cluster().is_none() {
        return Err(cluster_mode_off());
    }
    let snapshot = agent.state().snapshot();
    let reserved = snapshot.reserved_identities().map(|identity| identity.id);
    let views = agent
        .state()
        .remote_endpoints()
        .into_iter()
        .map(|e| {
            let (node, name) = e.name.split_once('/').unwrap_or(("", &e.name));
            let identity = e.ips.first().map(|ip| snapshot.identity_of(*ip).id);
            RemoteEndpointView {
                node: node.to_owned(),
                name: name.to_owned(),
                namespace: e.namespace().to_owned(),
                // An endpoint the cluster has not numbered yet resolves to the world.
                identity: identity.filter(|id| !reserved.contains(id)),
                ips: e.ips.clone(),
                labels: e.labels.clone(),
            }
        })
        .collect();
    Ok(Json(views))
}

fn cluster_mode_off() -> ApiError {
    ApiError(
        StatusCode::CONFLICT,
        "cluster mode is off: the configuration has no cluster section".into(),
    )
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

async fn metrics(Shared(agent): Shared<Arc<Agent>>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4");
    ([(header::CONTENT_TYPE, content_type)], agent.metrics_text()).into_response()
}

fn policy_json(policy: &axoneme_policy::Policy) -> Value {
    json!({
        "name": policy.name(),
        "namespace": policy.namespace(),
        "kind": policy.kind().as_str(),
        "source": policy.source(),
        "document": serde_json::to_value(policy.document()).unwrap_or(Value::Null),
    })
}

async fn list_policies(Shared(agent): Shared<Arc<Agent>>) -> Json<Value> {
    let policies: Vec<Value> = agent.state().policies().iter().map(policy_json).collect();
    Json(json!({ "revision": agent.state().revision(), "policies": policies }))
}

pub(crate) async fn get_policy(
    Shared(agent): Shared<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>> {
    let policies = agent.state().policies();
    let policy = policies
        .iter()
        .find(|p| p.name() == name)
        .ok_or(StateError::PolicyNotFound(name))?;
    let mut answer = policy_json(policy);
    answer["revision"] = json!(agent.state().revision());
    Ok(Json(answer))
}

/// The name of policies imported as a bare body, in messages and as their `source`.
const API_SOURCE: &str = "<api>";

/// An import body naming the files it carries (what `axoneme policy import` sends), so that
/// errors and warnings name the files. Any other body is the policies themselves.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFiles {
    files: Vec<PolicyText>,
}

#[derive(Deserialize)]
struct ImportOptions {
    #[serde(default)]
    validate: bool,
}

async fn import_policies(
    Shared(agent): Shared<Arc<Agent>>,
    Query(options): Query<ImportOptions>,
    body: Bytes,
) -> Result<Json<Value>> {
    let text = std::str::from_utf8(&body)
        .map_err(|e| bad_request(format!("the body is not UTF-8: {e}")))?;
    let texts = match serde_json::from_str::<PolicyFiles>(text) {
        Ok(files) => files.files,
        Err(_) => vec![PolicyText {
            source: API_SOURCE.to_owned(),
            text: text.to_owned(),
        }],
    };
    let validate = options.validate;
    let imported = match agent.cluster() {
        None => change(&agent, move |state| state.import(&texts, validate)).await?,
        Some(cluster) => {
            let checked = change(&agent, move |state| state.check_cluster_import(&texts)).await?;
            cluster.import(checked, validate).await?
        }
    };
    Ok(Json(json!({
        "revision": imported.revision,
        "policies": imported.names,
        "validated_only": options.validate,
        "warnings": imported.warnings,
    })))
}

async fn delete_policy(
    Shared(agent): Shared<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>> {
    let revision = match agent.cluster() {
        None => change(&agent, move |state| state.delete_policy(Some(&name))).await?,
        Some(cluster) => cluster.delete(Some(&name)).await?,
    };
    Ok(Json(json!({ "revision": revision })))
}

async fn delete_all_policies(Shared(agent): Shared<Arc<Agent>>) -> Result<Json<Value>> {
    let revision = match agent.cluster() {
        None => change(&agent, |state| state.delete_policy(None)).await?,
        Some(cluster) => cluster.delete(None).await?,
    };
    Ok(Json(json!({ "revision": revision })))
}

/// An endpoint with its identity and whether policy is enforced on it each way.
#[derive(Serialize)]
struct EndpointView {
    name: String,
    namespace: String,
    ips: Vec<IpAddr>,
    labels: BTreeMap<String, String>,
    identity: Option<u32>,
    /// `Enabled` when some policy selects the endpoint for ingress (and so only what policy
    /// allows gets in), `Disabled` when everything is allowed in: Cilium's
    /// `POLICY (ingress) ENFORCEMENT`.
    policy_ingress_enforcement: &'static str,
    /// The same for egress.
    policy_egress_enforcement: &'static str,
    /// Audit mode: what policy would deny is forwarded and logged as audited.
    #[serde(rename = "policyAuditMode")]
    policy_audit_mode: bool,
}

/// Cilium's words for enforcement.
fn enforcement(enforced: Option<bool>) -> &'static str {
    if enforced == Some(true) {
        "Enabled"
    } else {
        "Disabled"
    }
}

fn endpoint_views(agent: &Agent) -> Vec<EndpointView> {
    let snapshot = agent.state().snapshot();
    agent
        .state()
        .endpoints()
        .into_iter()
        .map(|e| EndpointView {
            identity: snapshot.endpoint(&e.name).map(|info| info.identity.id),
            namespace: e.namespace().to_owned(),
            policy_ingress_enforcement: enforcement(snapshot.enforced(&e.name, Direction::Ingress)),
            policy_egress_enforcement: enforcement(snapshot.enforced(&e.name, Direction::Egress)),
            policy_audit_mode: e.policy_audit_mode,
            name: e.name,
            ips: e.ips,
            labels: e.labels,
        })
        .collect()
}

async fn list_endpoints(Shared(agent): Shared<Arc<Agent>>) -> Json<Vec<EndpointView>> {
    Json(endpoint_views(&agent))
}

async fn get_endpoint(
    Shared(agent): Shared<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<EndpointView>> {
    let view = endpoint_views(&agent).into_iter().find(|e| e.name == name);
    Ok(Json(view.ok_or(StateError::EndpointNotFound(name))?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointBody {
    #[serde(default)]
    ips: Vec<IpAddr>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default, rename = "policyAuditMode")]
    policy_audit_mode: bool,
}

async fn put_endpoint(
    Shared(agent): Shared<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let body: EndpointBody =
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("endpoint: {e}")))?;
    let endpoint = EndpointSpec {
        name,
        ips: body.ips,
        labels: body.labels,
        namespace: body.namespace,
        policy_audit_mode: body.policy_audit_mode,
    };
    let revision = change(&agent, move |state| state.put_endpoint(endpoint)).await?;
    Ok(Json(json!({ "revision": revision })))
}

async fn delete_endpoint(
    Shared(agent): Shared<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>> {
    if let Some(listener) = agent
        .listeners()
        .into_iter()
        .find(|l| l.config.endpoint.as_deref() == Some(name.as_str()))
    {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "endpoint {name:?} is guarded by listener {:?}; delete the listener first",
                listener.config.name
            ),
        ));
    }
    let revision = change(&agent, move |state| state.delete_endpoint(&name)).await?;
    Ok(Json(json!({ "revision": revision })))
}

async fn list_identities(Shared(agent): Shared<Arc<Agent>>) -> Json<Vec<Value>> {
    Json(identities(&agent))
}

async fn get_identity(
    Shared(agent): Shared<Arc<Agent>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>> {
    let wanted: u32 = id
        .parse()
        .map_err(|_| bad_request(format!("identity: {id:?} is not a numeric identity")))?;
    identities(&agent)
        .into_iter()
        .find(|identity| identity["id"] == wanted)
        .map(Json)
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no identity {wanted} is known"),
            )
        })
}

/// Every identity known: the reserved ones and those of endpoints, with their labels and
/// endpoints.
fn identities(agent: &Agent) -> Vec<Value> {
    let snapshot = agent.state().snapshot();
    let mut identities: BTreeMap<u32, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for reserved in snapshot.reserved_identities() {
        identities
            .entry(reserved.id)
            .or_insert_with(|| (reserved.labels.to_vec(), Vec::new()));
    }
    for endpoint in agent.state().endpoints() {
        if let Some(info) = snapshot.endpoint(&endpoint.name) {
            let entry = identities
                .entry(info.identity.id)
                .or_insert_with(|| (info.identity.labels.to_vec(), Vec::new()));
            entry.1.push(endpoint.name);
        }
    }
    let list: Vec<Value> = identities
        .into_iter()
        .map(|(id, (labels, endpoints))| json!({ "id": id, "labels": labels, "endpoints": endpoints }))
        .collect();
    list
}

async fn list_listeners(Shared(agent): Shared<Arc<Agent>>) -> Json<Value> {
    Json(json!(agent.listeners()))
}

async fn get_listener(
    Shared(agent): Shared<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>> {
    let listener = agent
        .listeners()
        .into_iter()
        .find(|l| l.config.name == name);
    Ok(Json(json!(listener.ok_or(ListenerError::NotFound(name))?)))
}

async fn put_listener(
    Shared(agent): Shared<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let mut body: Value =
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("listener: {e}")))?;
    if let Some(fields) = body.as_object_mut() {
        fields.insert("name".into(), Value::String(name));
    }
    let config: ListenerConfig =
        serde_json::from_value(body).map_err(|e| bad_request(format!("listener: {e}")))?;
    let address = agent.put_listener(config, false).await?;
    Ok(Json(json!({ "address": address })))
}

async fn delete_listener(
    Shared(agent): Shared<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>> {
    agent.delete_listener(&name)?;
    Ok(Json(json!({ "draining": name })))
}

async fn list_redirects(Shared(agent): Shared<Arc<Agent>>) -> Json<Value> {
    Json(json!(agent.redirector().status().await))
}

async fn apply_redirects(Shared(agent): Shared<Arc<Agent>>) -> Result<Json<Value>> {
    agent.redirector().apply().await?;
    Ok(Json(json!(agent.redirector().status().await)))
}

async fn flush_redirects(Shared(agent): Shared<Arc<Agent>>) -> Result<Json<Value>> {
    agent.redirector().flush().await?;
    Ok(Json(json!(agent.redirector().status().await)))
}

/// Opens the access-log file's path anew, as after a rotation (as SIGHUP does too).
async fn reopen_access_log(Shared(agent): Shared<Arc<Agent>>) -> Result<Json<Value>> {
    match tokio::task::spawn_blocking(move || agent.reopen_access_log()).await {
        Ok(Ok(Some(path))) => Ok(Json(json!({ "path": path.display().to_string() }))),
        Ok(Ok(None)) => Err(ApiError(
            StatusCode::CONFLICT,
            "the agent writes no access-log file (accessLog is absent or \"-\")".into(),
        )),
        Ok(Err(error)) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the access-log file cannot be opened: {error}"),
        )),
        Err(error) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the reopen failed: {error}"),
        )),
    }
}

/// Reads `/v1/monitor`'s query (repeated keys allowed, see `openapi.json`); an unknown key,
/// protocol, type, verdict or endpoint is an error that says which and lists the valid ones.
pub(crate) fn monitor_query(agent: &Agent, pairs: Vec<(String, String)>) -> Result<WatchQuery> {
    let endpoints = agent.state().endpoints();
    let protocols = agent.state().registry().names();
    let context = QueryContext {
        endpoints: Some(&endpoints),
        protocols: &protocols,
    };
    parse_query(pairs, &context).map_err(|error| match error {
        QueryError::UnknownEndpoint { .. } => ApiError(StatusCode::NOT_FOUND, error.to_string()),
        _ => bad_request(error.to_string()),
    })
}

/// The recent entries `query` asks for, and a watch of later ones when it follows.
pub(crate) async fn replay(
    agent: Arc<Agent>,
    query: WatchQuery,
) -> Result<(Vec<Arc<[u8]>>, Option<monitor::Watch>)> {
    // The replay waits for the access log's writer to hand over the latest entries.
    tokio::task::spawn_blocking(move || {
        agent
            .monitor()
            .replay(query.filter, query.last.unwrap_or(0), query.follow)
    })
    .await
    .map_err(|error| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("replaying recent entries failed: {error}"),
        )
    })
}

async fn monitor(
    Shared(agent): Shared<Arc<Agent>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let query = monitor_query(&agent, pairs)?;
    let (replayed, watch) = replay(agent, query).await?;
    let replayed = stream::iter(
        replayed
            .into_iter()
            .map(|line| Ok::<_, Infallible>(Bytes::from_owner(line))),
    );
    let live = stream::unfold(watch, |watch| async move {
        let watch = watch?;
        let line = match watch.next().await {
            monitor::Next::Entry(line) => Bytes::from_owner(line),
            monitor::Next::Missed(missed) => {
                Bytes::from(format!("{{\"monitor_dropped\":{missed}}}\n"))
            }
        };
        Some((Ok::<_, Infallible>(line), Some(watch)))
    });
    let content_type = HeaderValue::from_static("application/x-ndjson");
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(futures_util::StreamExt::chain(replayed, live)),
    )
        .into_response())
}

/// A question to `policy trace`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceRequest {
    /// The remote side: an address, or labels of a known endpoint.
    #[serde(default)]
    address: Option<IpAddr>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    /// The guarded endpoint.
    endpoint: String,
    #[serde(default)]
    egress: bool,
    /// The upstream's port.
    port: u16,
    /// L7 fields of a request, e.g. `{"command": "get", "key": "a"}`.
    #[serde(default)]
    l7: BTreeMap<String, String>,
    /// The listener the connection would arrive on: its `l7proto` and what it guards count. A
    /// listener that guards `endpoint` in the traced direction and parses nothing unless policy
    /// says so, when absent.
    #[serde(default)]
    listener: Option<String>,
}

pub(crate) async fn trace(Shared(agent): Shared<Arc<Agent>>, body: Bytes) -> Result<Json<Value>> {
    let request: TraceRequest =
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("trace: {e}")))?;
    let state = agent.state();
    let snapshot = state.snapshot();
    if snapshot.endpoint(&request.endpoint).is_none() {
        return Err(StateError::EndpointNotFound(request.endpoint).into());
    }
    let remote = match (request.address, &request.labels) {
        (Some(address), _) => address,
        (None, Some(labels)) => state
            .endpoints()
            .into_iter()
            .find(|e| e.has_labels(labels))
            .and_then(|e| e.ips.first().copied())
            .ok_or_else(|| {
                bad_request("no endpoint with an address has exactly these labels; give an address")
            })?,
        (None, None) => return Err(bad_request("trace: give the remote's address or labels")),
    };
    let direction = if request.egress {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let route = match &request.listener {
        Some(name) => {
            let route = agent
                .listener_route(name)
                .ok_or_else(|| ListenerError::NotFound(name.clone()))?;
            if route.direction != direction {
                return Err(bad_request(format!(
                    "listener {name:?} guards {} connections; trace with egress: {}",
                    direction_name::name(route.direction),
                    route.direction == Direction::Egress
                )));
            }
            route
        }
        None => Route {
            listener: "trace".into(),
            guards: Guards::Endpoint(request.endpoint.as_str().into()),
            direction,
            l7proto: None,
            upstream: UpstreamOptions::default(),
        },
    };
    let Some(&own_address) = snapshot
        .endpoint(&request.endpoint)
        .and_then(|e| e.ips.first())
    else {
        return Err(bad_request(format!(
            "endpoint {:?} has no address to trace from",
            request.endpoint
        )));
    };
    let ends = match direction {
        Direction::Ingress => Ends {
            client: SocketAddr::new(remote, 0),
            upstream: SocketAddr::new(own_address, request.port),
        },
        Direction::Egress => Ends {
            client: SocketAddr::new(own_address, 0),
            upstream: SocketAddr::new(remote, request.port),
        },
    };
    let remote_identity = snapshot.identity_of(remote).clone();
    // The policies whose L7 rules the request was checked against, at the L7 stage.
    let mut checked: Vec<String> = Vec::new();
    let answer = |allowed: bool, stage: &str, policy: &str, reason: String, checked: &[String]| {
        Json(json!({
            "allowed": allowed,
            "stage": stage,
            "policy_name": policy,
            "reason": reason,
            "checked_policies": checked,
            "remote_identity": remote_identity.id,
            "remote_labels": remote_identity.labels.to_vec(),
        }))
    };
    let decision = decide(&snapshot, state.registry(), &route, ends, 0);
    let protocol = match decision.outcome {
        Outcome::Refuse {
            policy_name,
            reason,
            ..
        } => return Ok(answer(false, "l3l4", &policy_name, reason, &[])),
        Outcome::Forward => {
            let own = decision
                .ends
                .iter()
                .find(|end| end.guard.direction == direction);
            return Ok(match own.map(|end| &end.verdict) {
                Some(ConnectionVerdict::Allowed { policy_name, .. }) => answer(
                    true,
                    "l3l4",
                    policy_name,
                    "allowed at L3/L4; the port has no L7 rules".into(),
                    &[],
                ),
                _ => answer(
                    true,
                    "l3l4",
                    "",
                    "no policy selects the endpoint in this direction".into(),
                    &[],
                ),
            });
        }
        Outcome::Parse(protocol) => protocol,
    };
    // Every end whose policy has L7 rules on the port checks the request, in the order the
    // request meets them, as on a parsed connection; an end without them allows it.
    let proto = protocol.name();
    let mut allowed_by = "";
    for end in &decision.ends {
        let ConnectionVerdict::Allowed {
            l7: Some(port_policy),
            ..
        } = &end.verdict
        else {
            continue;
        };
        for name in port_policy.policy_names() {
            if !checked.iter().any(|known| known == name) {
                checked.push(name.to_owned());
            }
        }
        let mut failure = None;
        let verdict = port_policy.check(&mut |rules| match protocol.trace(rules, &request.l7) {
            Ok(matched) => matched,
            Err(error) => {
                failure.get_or_insert(error);
                false
            }
        });
        if let Some(error) = failure {
            return Err(bad_request(format!("l7: {error}")));
        }
        if !verdict.allowed || verdict.audited {
            let reason = format!(
                "no {proto} rule of {}'s {} policy allows this request",
                end.guard.endpoint,
                direction_name::name(end.guard.direction)
            );
            if verdict.audited {
                let reason = format!("audit mode: {reason}; it is forwarded and logged as Audit");
                return Ok(answer(true, "l7", verdict.policy_name, reason, &checked));
            }
            return Ok(answer(false, "l7", "", reason, &checked));
        }
        allowed_by = verdict.policy_name;
    }
    Ok(answer(
        true,
        "l7",
        allowed_by,
        format!("{proto} request allowed"),
        &checked,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_equal_only_when_every_byte_and_the_length_are() {
        let expected = b"Bearer s3cret";
        assert!(same_secret(b"Bearer s3cret", expected));
        for given in [
            &b"Bearer s3creT"[..],
            b"bearer s3cret",
            b"Bearer s3cre",
            b"Bearer s3crett",
            b"Bearer s3cret\0",
            b"",
        ] {
            assert!(!same_secret(given, expected), "{given:?}");
        }
        assert!(same_secret(b"", b""));
    }

    #[test]
    fn a_socket_is_bound_with_mode_0600_and_nothing_else_is_left() {
        let dir = std::env::temp_dir().join(format!("axoneme-api-bind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _listener = runtime.block_on(async { bind_private(&path).unwrap() });
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["api.sock"], "the private directory is gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
