//! The flow view's HTTP endpoints on a real agent in front of a real R2-D2 upstream, over real
//! sockets: on the API's TCP listener the page, its stream and its trace need the token (as a
//! bearer header, or as the cookie the login sets, which opens the page's routes only); the
//! login refuses a wrong token; the stream sends server-sent events whose per-edge counts match
//! the access log, filtered by the agent; unusable filters are answered 400/404 naming the
//! value; the trace of an edge's latest request names the policy that decided or was checked;
//! the loopback port serves the page alone, without a token, to loopback hosts only.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axoneme::control::{api, web};
use common::{connect_from, request, TestProxy, Upstream, LUKE};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "view-s3cret";
const POLICY: &str = "r2d2-obeys-luke";

/// An agent serving the API on TCP (`api`) and the flow view on a loopback port (`local`).
struct View {
    proxy: TestProxy,
    api: SocketAddr,
    local: SocketAddr,
    _upstream: Upstream,
}

impl View {
    async fn start(name: &str) -> View {
        let upstream = Upstream::start().await;
        let config = format!(
            r#"
endpoints:
  - {{name: r2d2, ips: ["127.0.0.1"], labels: {{app: r2d2}}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
listeners:
  - {{name: r2d2, listen: "127.0.0.1:0", upstream: "{}", endpoint: r2d2, direction: ingress, l7proto: r2d2}}
"#,
            upstream.addr
        );
        let proxy = TestProxy::reading_public(name, &config, upstream.addr).await;
        let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (api, local) = (
            api_listener.local_addr().unwrap(),
            local_listener.local_addr().unwrap(),
        );
        tokio::spawn(api::serve_tcp(
            Arc::clone(&proxy.agent),
            api_listener,
            TOKEN.into(),
        ));
        tokio::spawn(web::serve_local(Arc::clone(&proxy.agent), local_listener));
        View {
            proxy,
            api,
            local,
            _upstream: upstream,
        }
    }

    /// Luke reads a public file `allowed` times and a secret one `denied` times; the access
    /// log once it holds them all.
    async fn traffic(&self, allowed: usize, denied: usize) -> Vec<Value> {
        let before = self.proxy.log_entries(0).await.len();
        let mut stream = connect_from(LUKE, self.proxy.addr("r2d2")).await;
        for _ in 0..allowed {
            assert!(request(&mut stream, "READ /public/plans\r\n")
                .await
                .starts_with("OK"));
        }
        for _ in 0..denied {
            assert!(request(&mut stream, "READ /secret/plans\r\n")
                .await
                .starts_with("ERROR"));
        }
        self.proxy.log_entries(before + allowed + denied).await
    }
}

/// An answer: status, head (lower-cased header names) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends `method path` with the header lines `headers` (each ending in CRLF) and `body`, and
/// reads the whole answer (the connection is closed after it).
async fn http(to: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> Answer {
    let mut stream = TcpStream::connect(to).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn bearer() -> String {
    format!("Host: x\r\nAuthorization: Bearer {TOKEN}\r\n")
}

/// A server-sent event stream, read line by line.
struct Events {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
    /// Requests per (source identity, destination identity, verdict), summed over events.
    edges: BTreeMap<(u64, u64, String), u64>,
    /// The latest trace question per edge.
    traces: BTreeMap<(u64, u64, String), Value>,
}

impl Events {
    async fn open(to: SocketAddr, query: &str, headers: &str) -> Events {
        let mut stream = TcpStream::connect(to).await.unwrap();
        let head = format!("GET /ui/events{query} HTTP/1.1\r\n{headers}\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.contains(" 200 "), "{status}");
        let mut content_type = None;
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.strip_prefix("content-type: ") {
                content_type = Some(value.to_owned());
            }
        }
        assert_eq!(content_type.as_deref(), Some("text/event-stream"));
        Events {
            lines,
            edges: BTreeMap::new(),
            traces: BTreeMap::new(),
        }
    }

    /// Reads events until the summed edges are `expected` (within 5 s).
    async fn until(&mut self, expected: &BTreeMap<(u64, u64, String), u64>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while &self.edges != expected {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("edges {:?} within 5 s, not {:?}", expected, self.edges))
                .unwrap()
                .expect("the stream goes on");
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let batch: Value = serde_json::from_str(data).unwrap();
            assert!(batch["flows"].as_array().unwrap().len() <= web::FLOWS_PER_BATCH);
            for edge in batch["edges"].as_array().unwrap() {
                let key = (
                    edge["from"].as_u64().unwrap(),
                    edge["to"].as_u64().unwrap(),
                    edge["verdict"].as_str().unwrap().to_owned(),
                );
                *self.edges.entry(key.clone()).or_default() += edge["count"].as_u64().unwrap();
                self.traces.insert(key, edge["trace"].clone());
            }
        }
    }
}

/// Requests per (source identity, destination identity, verdict) in access-log `entries`
/// whose verdict `wanted` takes.
fn edges_of(entries: &[Value], wanted: impl Fn(&str) -> bool) -> BTreeMap<(u64, u64, String), u64> {
    let mut edges = BTreeMap::new();
    for entry in entries {
        let verdict = match (entry["entry_type"].as_str(), entry["verdict"].as_str()) {
            (Some("Denied"), _) => "denied",
            (_, Some("Audit")) => "audit",
            _ => "forwarded",
        };
        if wanted(verdict) {
            let key = (
                entry["source_security_id"].as_u64().unwrap(),
                entry["destination_security_id"].as_u64().unwrap(),
                verdict.to_owned(),
            );
            *edges.entry(key).or_default() += 1;
        }
    }
    edges
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_api_port_the_view_needs_the_token_and_the_login_cookie_opens_the_view_alone() {
    let view = View::start("web-auth").await;
    let page = http(view.api, "GET", "/ui/", "Host: x\r\n", "").await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains(r#"<form id="login">"#), "{}", page.body);
    for open in ["/ui/app.js", "/ui/style.css"] {
        assert_eq!(
            http(view.api, "GET", open, "Host: x\r\n", "").await.status,
            200,
            "{open}"
        );
    }
    for (method, path) in [
        ("GET", "/ui/events"),
        ("POST", "/ui/trace"),
        ("GET", "/ui/policy/x"),
    ] {
        let refused = http(view.api, method, path, "Host: x\r\n", "").await;
        assert_eq!(refused.status, 401, "{path}");
        assert_eq!(refused.json()["error"], "missing or wrong bearer token");
    }

    let page = http(view.api, "GET", "/ui/", &bearer(), "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"<svg id="map""#));
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.starts_with("default-src 'none'"), "{policy}");

    let login = |token: &str| {
        let body = json!({ "token": token }).to_string();
        async move { http(view.api, "POST", "/ui/login", "Host: x\r\n", &body).await }
    };
    let wrong = login("view-s3creT").await;
    assert_eq!(
        (wrong.status, wrong.json()["error"].clone()),
        (401, json!("wrong token"))
    );
    assert!(wrong.header("set-cookie").is_none());
    let right = login(TOKEN).await;
    assert_eq!(right.status, 204);
    let cookie = right.header("set-cookie").unwrap().to_owned();
    let attributes: Vec<&str> = cookie.split("; ").skip(1).collect();
    assert_eq!(attributes, ["Path=/ui/", "HttpOnly", "SameSite=Strict"]);
    let pair = cookie.split(';').next().unwrap();
    assert!(
        !pair.contains(TOKEN),
        "the cookie does not hold the token as typed"
    );

    let with_cookie = format!("Host: x\r\nCookie: theme=dark; {pair}\r\n");
    assert_eq!(
        http(view.api, "GET", "/ui/", &with_cookie, "").await.status,
        200
    );
    let policy = http(
        view.api,
        "GET",
        &format!("/ui/policy/{POLICY}"),
        &with_cookie,
        "",
    )
    .await;
    assert_eq!(policy.json()["name"], POLICY);
    assert_eq!(
        http(view.api, "GET", "/v1/status", &with_cookie, "")
            .await
            .status,
        401,
        "the cookie opens the view's routes, not the API"
    );
    // The cookie is a session secret, not the token in some encoding: one that encodes the
    // token is refused, and a second login gets the same session.
    let token_hex: String = TOKEN.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!pair.contains(&token_hex), "{pair}");
    for forged in ["00".to_owned(), token_hex, TOKEN.to_owned()] {
        let forged = format!("Host: x\r\nCookie: axoneme_ui={forged}\r\n");
        assert_eq!(http(view.api, "GET", "/ui/", &forged, "").await.status, 401);
    }
    let again = login(TOKEN).await;
    assert_eq!(
        again.header("set-cookie").unwrap().split(';').next(),
        Some(pair)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_counts_each_edge_as_the_access_log_does_filtered_by_the_agent() {
    let view = View::start("web-events").await;
    let mut all = Events::open(view.api, "", &bearer()).await;
    let mut denied = Events::open(view.api, "?verdict=DENIED", &bearer()).await;
    let entries = view.traffic(3, 2).await;
    let expected = edges_of(&entries, |_| true);
    assert_eq!(expected.values().sum::<u64>(), entries.len() as u64);
    assert_eq!(
        expected.len(),
        2,
        "a forwarded and a denied edge: {expected:?}"
    );
    all.until(&expected).await;
    denied
        .until(&edges_of(&entries, |verdict| verdict == "denied"))
        .await;

    // A late stream replays what it is asked to, then goes on live.
    let mut replayed = Events::open(view.api, "?last=1000&follow=true", &bearer()).await;
    replayed.until(&expected).await;
    let entries = view.traffic(1, 0).await;
    replayed.until(&edges_of(&entries, |_| true)).await;

    // The trace of each edge's latest request names the policy that decided, or those checked.
    for (key, question) in &replayed.traces {
        let json_headers = format!("{}Content-Type: application/json\r\n", bearer());
        let answer = http(
            view.api,
            "POST",
            "/ui/trace",
            &json_headers,
            &question.to_string(),
        )
        .await;
        let answer = answer.json();
        assert_eq!(answer["allowed"], key.2 == "forwarded", "{key:?}: {answer}");
        assert_eq!(answer["stage"], "l7");
        assert_eq!(answer["checked_policies"], json!([POLICY]));
        let decided = if key.2 == "forwarded" { POLICY } else { "" };
        assert_eq!(answer["policy_name"], decided);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_the_agent_cannot_use_is_an_error_naming_it() {
    let view = View::start("web-filters").await;
    for (query, status, message) in [
        ("verdict=MAYBE", 400, r#"verdict: "MAYBE" is not one of"#),
        (
            "protocol=gopher",
            400,
            r#"protocol: "gopher" is not one of"#,
        ),
        ("from_identity=luke", 400, r#"from_identity: "luke""#),
        ("colour=red", 400, r#""colour" is not a monitor filter"#),
        (
            "from_endpoint=leia",
            404,
            r#"endpoint: "leia" is not a known endpoint"#,
        ),
    ] {
        let answer = http(
            view.api,
            "GET",
            &format!("/ui/events?{query}"),
            &bearer(),
            "",
        )
        .await;
        assert_eq!(answer.status, status, "{query}");
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(error.starts_with(message), "{query}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loopback_port_serves_the_view_alone_without_a_token_to_loopback_hosts() {
    let view = View::start("web-local").await;
    for host in ["localhost", "127.0.0.1:9876", "[::1]"] {
        let page = http(view.local, "GET", "/ui/", &format!("Host: {host}\r\n"), "").await;
        assert_eq!(page.status, 200, "{host}");
        assert!(page.body.contains(r#"<svg id="map""#));
    }
    for host in ["evil.example", "127.0.0.1.evil.example:9876"] {
        let refused = http(view.local, "GET", "/ui/", &format!("Host: {host}\r\n"), "").await;
        assert_eq!(refused.status, 403, "{host}");
    }
    let api = http(view.local, "GET", "/v1/status", "Host: localhost\r\n", "").await;
    assert_eq!(api.status, 404, "the API is not on the view's port");
    let json_host = "Host: localhost\r\nContent-Type: application/json\r\n";
    let login = http(view.local, "POST", "/ui/login", json_host, "{}").await;
    assert_eq!(login.status, 404, "nor is the login");

    // Without a token here, what another site's page could make a browser send is refused: a
    // request marked cross-site, and a POST that is not JSON (a form, a no-cors fetch).
    let cross_site = "Host: localhost\r\nSec-Fetch-Site: cross-site\r\n";
    for (method, path) in [
        ("GET", "/ui/events"),
        ("GET", "/ui/policy/x"),
        ("GET", "/ui/"),
    ] {
        let refused = http(view.local, method, path, cross_site, "").await;
        assert_eq!(refused.status, 403, "{path}");
    }
    let question = r#"{"src_labels": ["app=x"], "dst_endpoint": "memcached", "dport": 11211}"#;
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let headers = format!("Host: localhost\r\nContent-Type: {content_type}\r\n");
        let refused = http(view.local, "POST", "/ui/trace", &headers, question).await;
        assert_eq!(refused.status, 415, "{content_type}");
    }
    let same_origin = "Host: localhost\r\nSec-Fetch-Site: same-origin\r\nContent-Type: application/json; charset=utf-8\r\n";
    let traced = http(view.local, "POST", "/ui/trace", same_origin, question).await;
    assert_ne!(traced.status, 415, "{}", traced.body);
    assert_ne!(traced.status, 403, "{}", traced.body);

    let mut events = Events::open(view.local, "?verdict=FORWARDED", "Host: localhost\r\n").await;
    let entries = view.traffic(2, 1).await;
    events
        .until(&edges_of(&entries, |verdict| verdict == "forwarded"))
        .await;
}
