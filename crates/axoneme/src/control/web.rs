//! The flow view in the browser: a page (`/ui/`) showing live flows, a service map of identities
//! with edges coloured by verdict, and the policy decision behind a selected edge.
//!
//! It owns the page's routes and how they are reached: on the API's TCP listener behind the
//! API's token (an `Authorization: Bearer` header, or the HttpOnly cookie that `/ui/login` sets
//! once the token is typed into the login form: a random session secret, not the token, sent
//! with `/ui/` requests only),
//! and on `web.listen`, a loopback-only listener without a token that serves the page's routes
//! alone and answers only requests naming a loopback host (so that a site rebinding its DNS
//! name to 127.0.0.1 reads nothing). The assets are built into the binary; the page loads
//! nothing from elsewhere (its Content-Security-Policy says so).
//!
//! Flows come from the monitor, filtered by the agent with `/v1/monitor`'s filters, and are
//! aggregated here before they reach the browser: every [`BATCH_INTERVAL`] one server-sent event
//! carries the requests counted per edge (source identity, destination identity, verdict) and
//! only the latest [`FLOWS_PER_BATCH`] flows, whatever the rate. The rule behind an edge is
//! `policy trace` of that edge's latest request. Nothing here changes the agent's state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axoneme_sdk::{Direction, EntryType};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, Request, State as Shared};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::control::api::{self, same_secret, ApiError};
use crate::control::observe::{format_time, l7_summary};
use crate::telemetry::flow_filter::{Flow, FlowVerdict, LoggedFlow};
use crate::telemetry::monitor::{Next as Watched, Watch};
use crate::Agent;

/// How often the live stream sends what it gathered.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The most flows one event lists (the latest of its interval); every flow is counted on its
/// edge all the same.
pub const FLOWS_PER_BATCH: usize = 100;

/// Entries taken from the monitor at once before the stream looks at its interval again.
const DRAIN_AT_ONCE: usize = 1024;

/// Intervals without flows between two keep-alive comments on the stream.
const KEEP_ALIVE_INTERVALS: u32 = 40;

/// The largest request body the page's routes take (a trace question or a login).
const MAX_BODY_BYTES: usize = 64 << 10;

/// The cookie holding the login's session secret, for the page's requests.
const COOKIE: &str = "axoneme_ui";

const INDEX_HTML: &str = include_str!("web/index.html");
const LOGIN_HTML: &str = include_str!("web/login.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// The page may load and connect to its own origin only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The page's routes, reached with whatever the listener requires.
pub fn routes(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { page(StatusCode::OK, INDEX_HTML) }))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript", APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css", STYLE_CSS) }),
        )
        .route("/ui/events", get(events))
        .route("/ui/trace", post(api::trace))
        .route("/ui/policy/{name}", get(api::get_policy))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(same_site_only))
        .with_state(agent)
}

/// Refuses what another site's page could make a browser send here: any request the browser
/// marks cross-site (`Sec-Fetch-Site`), and a POST that is not JSON (a page of another origin
/// cannot send JSON here without a CORS preflight, which this server never grants). Without a
/// token on `web.listen`, this is what keeps other sites from running traces or opening streams
/// through a visitor's browser.
async fn same_site_only(request: Request, next: Next) -> Response {
    let headers = request.headers();
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"cross-site")
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the flow view answers its own pages only, not requests from another site".into(),
        )
        .into_response();
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
        });
    if request.method() == Method::POST && !json {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the flow view's POST routes take application/json only".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// Paths served without a token on the API's listener: the login and the static assets (which
/// hold nothing of the agent's).
fn open_path(method: &Method, path: &str) -> bool {
    matches!(
        (method, path),
        (&Method::POST, "/ui/login") | (&Method::GET, "/ui/app.js" | "/ui/style.css" | "/")
    )
}

fn page(status: StatusCode, html: &'static str) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        html,
    )
        .into_response()
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        text,
    )
        .into_response()
}

/// What a request may carry to be let in: the API token, or the session the login gives.
pub(crate) struct Credentials {
    /// `Bearer <token>`.
    bearer: Vec<u8>,
    /// The token itself, as the login form sends it.
    token: Vec<u8>,
    /// The login cookie's value: a random secret drawn when the listener starts, so that the
    /// cookie neither holds nor reveals the token and is void once the agent restarts.
    session: Vec<u8>,
}

/// What the API's listener does with a request.
pub(crate) enum Admission {
    /// It carries the token, or needs none.
    Pass,
    /// It lacks the token and is the page itself: the login form is the answer.
    LoginForm,
    /// It lacks the token.
    Refuse,
}

impl Credentials {
    /// The credentials of `token`, with a new session secret from the kernel's random
    /// source.
    pub(crate) fn new(token: &str) -> std::io::Result<Credentials> {
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
        Ok(Credentials {
            bearer: format!("Bearer {token}").into_bytes(),
            token: token.as_bytes().to_vec(),
            session: hex(&secret).into_bytes(),
        })
    }

    /// Whether `request` may go on: with the bearer token anywhere, with the cookie on the
    /// page's routes, or without either on the open paths.
    pub(crate) fn admit(&self, request: &Request) -> Admission {
        let headers = request.headers();
        let path = request.uri().path();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .map_or(&b""[..], HeaderValue::as_bytes);
        let with_cookie = path.starts_with("/ui/")
            && cookie(headers).is_some_and(|value| same_secret(value, &self.session));
        if with_cookie || same_secret(bearer, &self.bearer) || open_path(request.method(), path) {
            Admission::Pass
        } else if request.method() == Method::GET && matches!(path, "/ui" | "/ui/") {
            Admission::LoginForm
        } else {
            Admission::Refuse
        }
    }

    /// The login route: a token that matches sets the cookie.
    pub(crate) fn login_route(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/ui/login",
                post(move |body: Bytes| async move { self.login(&body) }),
            )
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    }

    fn login(&self, body: &[u8]) -> Result<Response, ApiError> {
        let given: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("login: {e}; send {{\"token\": \"...\"}}"),
            )
        })?;
        let given = given["token"].as_str().unwrap_or_default();
        if !same_secret(given.as_bytes(), &self.token) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong token".into(),
            ));
        }
        let session = String::from_utf8_lossy(&self.session);
        let cookie = format!("{COOKIE}={session}; Path=/ui/; HttpOnly; SameSite=Strict");
        let cookie = HeaderValue::from_str(&cookie).expect("hex digits and ASCII");
        Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
    }
}

/// The answer to a request the API's listener refuses for want of the token.
pub(crate) fn login_form() -> Response {
    page(StatusCode::UNAUTHORIZED, LOGIN_HTML)
}

/// The value of the page's cookie in `headers`, if any.
fn cookie(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            pair.strip_prefix(COOKIE.as_bytes())?.strip_prefix(b"=")
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves the page on `web.listen` (a loopback address), without a token, to requests that
/// name a loopback host.
pub async fn serve_local(agent: Arc<Agent>, listener: TcpListener) -> anyhow::Result<()> {
    let app = routes(Arc::clone(&agent)).layer(middleware::from_fn(
        |request: Request, next: Next| async move {
            match request.headers().get(header::HOST).map(HeaderValue::to_str) {
                Some(Ok(host)) if loopback_host(host) => next.run(request).await,
                other => ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "the flow view on web.listen answers requests for a loopback host only \
                         (localhost, 127.0.0.1, [::1]), not Host: {:?}",
                        other.and_then(Result::ok).unwrap_or_default()
                    ),
                )
                .into_response(),
            }
        },
    ));
    tracing::info!(address = %listener.local_addr()?, "flow view listening");
    crate::control::http_server::serve(listener, app, &agent).await;
    Ok(())
}

/// Whether a `Host` header (`name`, `name:port`, `[v6]` or `[v6]:port`) names this machine by
/// a loopback name or address.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((inside, "")) => inside,
            Some((inside, port)) if port.starts_with(':') => inside,
            _ => return false,
        },
        None => host.split_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The live stream: `/v1/monitor`'s query (filters, `last`, `follow`) in, server-sent events
/// out, each a JSON batch (see [`Batch::take`]).
async fn events(
    Shared(agent): Shared<Arc<Agent>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = api::monitor_query(&agent, pairs)?;
    let names = endpoint_names(&agent);
    let (replayed, watch) = api::replay(agent, query).await?;
    let mut batch = Batch::new(names);
    for line in &replayed {
        batch.add(line);
    }
    let first = Bytes::from(format!(
        "retry: 2000\n{}",
        String::from_utf8_lossy(&batch.take().unwrap_or_else(|| Bytes::from_static(b"\n")))
    ));
    let live = Live {
        batch,
        watch,
        interval: tokio::time::interval(BATCH_INTERVAL),
        quiet: 0,
    };
    let live = stream::unfold(live, |mut live| async move {
        let watch = live.watch.as_ref()?;
        loop {
            tokio::select! {
                biased;
                _ = live.interval.tick() => {
                    if let Some(event) = live.batch.take() {
                        live.quiet = 0;
                        return Some((Ok::<_, Infallible>(event), live));
                    }
                    live.quiet += 1;
                    if live.quiet >= KEEP_ALIVE_INTERVALS {
                        live.quiet = 0;
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), live));
                    }
                }
                next = watch.next() => {
                    // What else waits is taken too, a bounded number at a time so that the
                    // interval's event is never held up.
                    let waiting = (0..DRAIN_AT_ONCE).map_while(|_| watch.try_next());
                    for next in std::iter::once(next).chain(waiting) {
                        match next {
                            Watched::Entry(line) => live.batch.add(&line),
                            Watched::Missed(missed) => live.batch.lost += missed,
                        }
                    }
                }
            }
        }
    });
    let body = futures_util::StreamExt::chain(stream::once(async { Ok(first) }), live);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// A stream's state between events.
struct Live {
    batch: Batch,
    watch: Option<Watch>,
    interval: tokio::time::Interval,
    /// Intervals since the last event.
    quiet: u32,
}

/// Endpoint names by address, to name the identities on the map.
fn endpoint_names(agent: &Agent) -> HashMap<IpAddr, String> {
    let mut names = HashMap::new();
    // Other nodes' endpoints (cluster mode) are named `<node>/<name>`.
    let state = agent.state();
    for endpoint in state
        .remote_endpoints()
        .into_iter()
        .chain(state.endpoints())
    {
        for ip in &endpoint.ips {
            names.insert(*ip, endpoint.name.clone());
        }
    }
    names
}

/// What counting an entry on its edge reads of it; the rest of the line is skipped unread.
#[derive(serde::Deserialize)]
struct EdgeOf<'a> {
    entry_type: &'a str,
    #[serde(default)]
    verdict: Option<&'a str>,
    source_security_id: u64,
    destination_security_id: u64,
}

/// An edge of the map: requests from one identity to another with one verdict.
type EdgeKey = (u64, u64, &'static str);

/// The flows of one interval, aggregated. Every entry is counted on its edge from a light
/// reading of its line; only the lines an event shows (the latest flows, each edge's latest
/// request, an identity first seen) are read whole, when the event is made.
pub struct Batch {
    names: HashMap<IpAddr, String>,
    /// Identities seen in the interval, each with the line that showed it first.
    nodes: BTreeMap<u64, Arc<[u8]>>,
    /// Requests per edge, with the line of the latest.
    edges: HashMap<EdgeKey, (u64, Arc<[u8]>)>,
    /// The lines of the latest flows, with their verdicts.
    flows: VecDeque<(&'static str, Arc<[u8]>)>,
    /// Flows in the interval.
    total: u64,
    /// Flows the monitor lost because this stream fell behind.
    pub lost: u64,
}

impl Batch {
    /// An empty batch naming identities after the endpoints in `names`.
    pub fn new(names: HashMap<IpAddr, String>) -> Batch {
        Batch {
            names,
            nodes: BTreeMap::new(),
            edges: HashMap::new(),
            flows: VecDeque::new(),
            total: 0,
            lost: 0,
        }
    }

    /// Counts the access-log entry `line`; a line that is not an entry is skipped.
    pub fn add(&mut self, line: &Arc<[u8]>) {
        let Ok(edge) = serde_json::from_slice::<EdgeOf<'_>>(line) else {
            return;
        };
        let entry_type = match edge.entry_type {
            "Request" => EntryType::Request,
            "Response" => EntryType::Response,
            "Denied" => EntryType::Denied,
            _ => return,
        };
        let verdict = match FlowVerdict::of(entry_type, edge.verdict == Some("Audit")) {
            FlowVerdict::Forwarded => "forwarded",
            FlowVerdict::Denied => "denied",
            FlowVerdict::Audit => "audit",
        };
        let (from, to) = (edge.source_security_id, edge.destination_security_id);
        for id in [from, to] {
            self.nodes.entry(id).or_insert_with(|| Arc::clone(line));
        }
        self.flows.push_back((verdict, Arc::clone(line)));
        if self.flows.len() > FLOWS_PER_BATCH {
            self.flows.pop_front();
        }
        let counted = self
            .edges
            .entry((from, to, verdict))
            .or_insert_with(|| (0, Arc::clone(line)));
        counted.0 += 1;
        counted.1 = Arc::clone(line);
        self.total += 1;
    }

    /// The identity `id` as the entry `line` shows it: its endpoint's name (or its address)
    /// and its labels.
    fn node(&self, id: u64, line: &[u8]) -> Value {
        let entry: Value = serde_json::from_slice(line).unwrap_or_default();
        let side = if entry["source_security_id"].as_u64() == Some(id) {
            "source"
        } else {
            "destination"
        };
        let address = entry[format!("{side}_address")]
            .as_str()
            .unwrap_or_default();
        let ip = address.parse::<SocketAddr>().ok().map(|a| a.ip());
        let name = ip
            .and_then(|ip| self.names.get(&ip).cloned())
            .or(ip.map(|ip| ip.to_string()))
            .unwrap_or_else(|| format!("identity {id}"));
        json!({ "id": id, "name": name, "labels": entry[format!("{side}_labels")] })
    }

    /// The batch as one server-sent event, emptied; none when it holds nothing. The event's
    /// data: `{"total", "lost", "nodes": [{id, name, labels}], "edges": [{from, to, verdict,
    /// count, trace}], "flows": [{time, from, to, verdict, type, proto, summary, policy}]}`,
    /// `trace` being the body of `POST /ui/trace` for the edge's latest request.
    pub fn take(&mut self) -> Option<Bytes> {
        if self.total == 0 && self.lost == 0 {
            return None;
        }
        let nodes: Vec<Value> = std::mem::take(&mut self.nodes)
            .into_iter()
            .map(|(id, line)| self.node(id, &line))
            .collect();
        let edges: Vec<Value> = self
            .edges
            .drain()
            .map(|((from, to, verdict), (count, line))| {
                let entry: Value = serde_json::from_slice(&line).unwrap_or_default();
                json!({
                    "from": from, "to": to, "verdict": verdict, "count": count,
                    "trace": trace_question(&entry),
                })
            })
            .collect();
        let flows: Vec<Value> = self
            .flows
            .drain(..)
            .map(|(verdict, line)| flow_summary(verdict, &line))
            .collect();
        let data = json!({
            "total": std::mem::take(&mut self.total),
            "lost": std::mem::take(&mut self.lost),
            "nodes": nodes,
            "edges": edges,
            "flows": flows,
        });
        Some(Bytes::from(format!("data: {data}\n\n")))
    }
}

/// A flow as the table shows it: time, identities, verdict, entry type, protocol, the request
/// in a few words, the policy named.
fn flow_summary(verdict: &str, line: &[u8]) -> Value {
    let entry: Value = serde_json::from_slice(line).unwrap_or_default();
    let proto = match entry["generic_l7"]["proto"].as_str() {
        Some("") | None => "l4",
        Some(proto) => proto,
    };
    let time = entry["timestamp"]
        .as_u64()
        .map(|nanos| format_time(nanos, true))
        .unwrap_or_default();
    json!({
        "time": time,
        "from": entry["source_security_id"],
        "to": entry["destination_security_id"],
        "verdict": verdict,
        "type": entry["entry_type"],
        "proto": proto,
        "summary": entry["generic_l7"]["fields"].as_object().map(l7_summary).unwrap_or_default(),
        "policy": entry["policy_name"],
    })
}

/// The `policy trace` question that asks again about the request of `entry`: the same guarded
/// endpoint, remote address, direction, port, listener and L7 fields.
fn trace_question(entry: &Value) -> Value {
    let flow = LoggedFlow(entry);
    let ingress = flow.direction() == Direction::Ingress;
    let port = entry["destination_address"]
        .as_str()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.port());
    let l7: Map<String, Value> = entry["generic_l7"]["fields"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, value)| value.is_string())
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    json!({
        "endpoint": flow.endpoint(),
        "address": flow.address(ingress),
        "egress": !ingress,
        "port": port,
        "listener": entry["listener"],
        "l7": l7,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(source: &str, id: u64, entry_type: &str, audit: bool, command: &str) -> String {
        let verdict = if audit {
            r#","verdict":"Audit","reason":"no-allow""#
        } else {
            ""
        };
        format!(
            r#"{{"timestamp":1765000000000000000,"is_ingress":true,"entry_type":"{entry_type}","policy_name":"p"{verdict},"source_address":"{source}:4000","destination_address":"127.0.0.1:11211","source_security_id":{id},"destination_security_id":256,"source_labels":["app={id}"],"destination_labels":["app=cache"],"listener":"cache","endpoint":"cache","generic_l7":{{"proto":"memcache","fields":{{"command":"{command}","keys":"a"}}}}}}"#
        ) + "\n"
    }

    fn data(event: &Bytes) -> Value {
        let text = std::str::from_utf8(event).unwrap();
        let json = text
            .strip_prefix("data: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .unwrap();
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn ten_thousand_flows_make_one_event_with_counts_per_edge_and_the_latest_flows() {
        let names = HashMap::from([("127.0.0.21".parse().unwrap(), "luke".to_owned())]);
        let mut batch = Batch::new(names);
        let lines = [
            entry("127.0.0.21", 300, "Request", false, "get"),
            entry("127.0.0.21", 300, "Denied", false, "set"),
            entry("127.0.0.22", 301, "Request", true, "set"),
            entry("127.0.0.22", 301, "Response", false, "set"),
        ];
        let lines = lines.map(|line| Arc::<[u8]>::from(line.as_bytes()));
        for i in 0..10_000 {
            batch.add(&lines[i % 4]);
        }
        batch.add(&Arc::from(&b"{\"monitor_dropped\":3}\n"[..]));
        let event = batch.take().unwrap();
        assert!(event.len() < 64 << 10, "{} bytes", event.len());
        let data = data(&event);
        assert_eq!(data["total"], 10_000);
        assert_eq!(data["flows"].as_array().unwrap().len(), FLOWS_PER_BATCH);
        let mut edges: Vec<(u64, &str, u64)> = data["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["to"], 256);
                (
                    e["from"].as_u64().unwrap(),
                    e["verdict"].as_str().unwrap(),
                    e["count"].as_u64().unwrap(),
                )
            })
            .collect();
        edges.sort();
        assert_eq!(
            edges,
            [
                (300, "denied", 2500),
                (300, "forwarded", 2500),
                (301, "audit", 2500),
                (301, "forwarded", 2500),
            ]
        );
        let nodes = data["nodes"].as_array().unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["127.0.0.1", "luke", "127.0.0.22"]);
        assert!(batch.take().is_none(), "the batch is emptied");
    }

    #[test]
    fn an_edge_carries_the_trace_question_of_its_latest_request() {
        let mut batch = Batch::new(HashMap::new());
        for command in ["get", "gets"] {
            batch.add(&Arc::from(
                entry("127.0.0.21", 300, "Request", false, command).as_bytes(),
            ));
        }
        let data = data(&batch.take().unwrap());
        assert_eq!(
            data["edges"][0]["trace"],
            json!({
                "endpoint": "cache", "address": "127.0.0.21", "egress": false, "port": 11211,
                "listener": "cache", "l7": {"command": "gets", "keys": "a"},
            })
        );
    }

    #[test]
    fn only_loopback_hosts_are_served_without_a_token() {
        for host in [
            "localhost",
            "localhost:9876",
            "127.0.0.1:9876",
            "127.1.2.3",
            "[::1]:80",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9876",
            "10.0.0.1:9876",
            "127.0.0.1.evil.example",
            "[::1]x",
            "::1",
            "",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }
}
