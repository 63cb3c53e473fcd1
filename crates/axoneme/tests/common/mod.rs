//! Shared pieces of the integration tests: a recording R2-D2 upstream, a real memcached, clients
//! with chosen source addresses, a proxy started from YAML, the access log read back as JSON, raw
//! API requests.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axoneme::config::Config;
use axoneme::Agent;
use axoneme_sdk::Registry;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// What the upstream received, per connection, and whether it saw each connection's end.
#[derive(Default, Debug)]
pub(crate) struct Received {
    pub bytes: Vec<u8>,
    pub eof_seen: bool,
}

/// The address luke's connections come from: a loopback address of luke's own.
pub(crate) const LUKE: &str = "127.0.0.21";

/// A policy named `name` under which r2d2 takes from luke, on `port`, the R2-D2 requests the
/// `l7` list items `rules` allow (e.g. `{cmd: READ, file: "/public/.*"}`).
pub(crate) fn r2d2_policy(name: &str, port: u16, rules: &str) -> String {
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {name}}}
spec:
  endpointSelector: {{matchLabels: {{app: r2d2}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{app: luke}}}}]
      toPorts:
        - ports: [{{port: "{port}"}}]
          rules: {{l7proto: r2d2, l7: [{rules}]}}
"#
    )
}

/// An R2-D2 upstream that records every byte and answers each line with `OK <line>`.
pub(crate) struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<Mutex<Vec<Arc<Mutex<Received>>>>>,
}

impl Upstream {
    pub(crate) async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<Arc<Mutex<Received>>>>> = Arc::default();
        let all = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let received = Arc::new(Mutex::new(Received::default()));
                all.lock().unwrap().push(Arc::clone(&received));
                tokio::spawn(answer_lines(stream, received));
            }
        });
        Upstream { addr, connections }
    }

    /// Everything received on all connections so far, in connection order.
    pub(crate) fn received(&self) -> Vec<u8> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .flat_map(|c| c.lock().unwrap().bytes.clone())
            .collect()
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.connections.lock().unwrap().len()
    }

    pub(crate) fn saw_eof(&self, connection: usize) -> bool {
        self.connections.lock().unwrap()[connection]
            .lock()
            .unwrap()
            .eof_seen
    }
}

async fn answer_lines(stream: TcpStream, received: Arc<Mutex<Received>>) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        match rd.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                received.lock().unwrap().bytes.extend_from_slice(&line);
                let mut reply = b"OK ".to_vec();
                reply.extend_from_slice(line.strip_suffix(b"\r\n").unwrap_or(&line));
                reply.extend_from_slice(b"\r\n");
                if wr.write_all(&reply).await.is_err() {
                    break;
                }
            }
        }
    }
    received.lock().unwrap().eof_seen = true;
    let _ = wr.shutdown().await;
}

/// A client connection from `source` (a loopback address standing for an identity).
pub(crate) async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends `request` and reads one reply line (empty when the connection was closed).
pub(crate) async fn request(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    read_line(stream).await
}

/// Reads one `\n`-terminated line, byte by byte so nothing is left buffered; empty at EOF.
pub(crate) async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            Err(_) => panic!(
                "no reply within 5 s (got {:?} so far)",
                String::from_utf8_lossy(&line)
            ),
        }
    }
    String::from_utf8(line).unwrap()
}

/// Starts `axoneme run` on `config.yaml` in `dir`, the agent's own log going to `agent.log`
/// there.
pub(crate) fn spawn_agent(dir: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_axoneme"))
        .current_dir(dir)
        .args(["run", "--config", "config.yaml"])
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap()
}

/// Waits (up to 10 s) until the agent whose API socket is `api.sock` in `dir` answers
/// `status`.
pub(crate) async fn wait_for_api(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("api.sock").exists() || !agent_cli(dir, &["status"]).status.success() {
        assert!(Instant::now() < deadline, "the agent did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends the signal `name` (`HUP`, `TERM`...) to `child`.
pub(crate) fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// Runs the CLI with `args` against the agent whose API socket is `api.sock` in `dir`.
pub(crate) fn agent_cli(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_axoneme"))
        .current_dir(dir)
        .arg("--api")
        .arg(dir.join("api.sock"))
        .args(args)
        .output()
        .unwrap()
}

/// Sends the raw HTTP `request` to the API socket `api.sock` in `dir`; the status line and the
/// body of the answer.
pub(crate) async fn raw_api(dir: &Path, request: &str) -> (String, String) {
    let mut stream = tokio::net::UnixStream::connect(dir.join("api.sock"))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Child processes killed when the test ends, however it ends.
pub(crate) struct Children(pub Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts memcached on a free loopback port, kept in `children`, and waits until it accepts
/// connections; its port.
pub(crate) fn start_memcached(children: &mut Children) -> u16 {
    use std::os::unix::fs::MetadataExt;
    let port = free_port();
    let mut command = std::process::Command::new("memcached");
    command.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"]);
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        command.args(["-u", "root"]);
    }
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("memcached is required (scripts/test.sh installs it)");
    children.0.push(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "memcached did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    port
}

/// A fresh directory for one test's files.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "axoneme-test-{}-{}-{}",
        name,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A proxy started from configuration text, with its access log in the test's directory.
pub(crate) struct TestProxy {
    pub agent: Arc<Agent>,
    pub dir: PathBuf,
}

impl TestProxy {
    /// Writes `policy` and a configuration (`config` followed by an access log and the policy
    /// file) to a fresh directory and starts a proxy from it.
    pub(crate) async fn start(
        name: &str,
        config: &str,
        policy: &str,
        registry: Registry,
    ) -> TestProxy {
        let dir = temp_dir(name);
        std::fs::write(dir.join("policy.yaml"), policy).unwrap();
        let text = format!(
            "{config}\naccessLog: {{path: {:?}}}\npolicies: [policy.yaml]\n",
            dir.join("access.log").display().to_string()
        );
        std::fs::write(dir.join("config.yaml"), &text).unwrap();
        let config = Config::load(&dir.join("config.yaml")).unwrap();
        let agent = Agent::start(&config, registry, None).await.unwrap();
        TestProxy { agent, dir }
    }

    /// A proxy started from `config` under which r2d2 takes luke's READs of `/public/` files on
    /// `upstream`'s port.
    pub(crate) async fn reading_public(
        name: &str,
        config: &str,
        upstream: SocketAddr,
    ) -> TestProxy {
        let policy = r2d2_policy(
            "r2d2-obeys-luke",
            upstream.port(),
            r#"{cmd: READ, file: "/public/.*"}"#,
        );
        TestProxy::start(
            name,
            config,
            &policy,
            axoneme::builtin_protocols(&Default::default()),
        )
        .await
    }

    pub(crate) fn addr(&self, listener: &str) -> SocketAddr {
        self.agent.local_addr(listener).unwrap()
    }

    pub(crate) fn write_policy(&self, policy: &str) {
        std::fs::write(self.dir.join("policy.yaml"), policy).unwrap();
    }

    /// Waits until the access log holds at least `n` entries, and returns them all.
    pub(crate) async fn log_entries(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let entries = read_log(&self.dir.join("access.log"));
            if entries.len() >= n || Instant::now() > deadline {
                return entries;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn read_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}")))
        .collect()
}
