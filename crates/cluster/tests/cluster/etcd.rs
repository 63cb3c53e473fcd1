//! Real etcd members for the tests: started on free ports in a temporary directory, stopped,
//! restarted and wiped on demand, and killed when the test ends.

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axoneme_cluster::ClusterConfig;

static NEXT: AtomicUsize = AtomicUsize::new(0);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// An etcd cluster of one or more members, each its own `etcd` process.
pub(crate) struct Etcd {
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
}

impl Etcd {
    /// One member.
    pub(crate) fn single() -> Etcd {
        Etcd::cluster(1)
    }

    /// `size` members forming one cluster; returns once every member is healthy.
    pub(crate) fn cluster(size: usize) -> Etcd {
        // The crate's log, shown for failed tests (`AXONEME_LOG=debug` for more).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("AXONEME_LOG")
                    .unwrap_or_else(|_| "axoneme_cluster=info".into()),
            )
            .with_test_writer()
            .try_init();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let token = format!("axoneme-test-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&token);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Hold every listener until all ports are chosen, so none is chosen twice.
        let listeners: Vec<TcpListener> = (0..size * 2)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let mut etcd = Etcd {
            dir,
            token,
            members,
        };
        for i in 0..size {
            etcd.spawn(i);
        }
        etcd.wait_healthy(&(0..size).collect::<Vec<_>>());
        etcd
    }

    /// The client URLs of every member.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// A cluster configuration for `node` with a short lease and grace period.
    pub(crate) fn config(&self, cluster: &str, node: &str) -> ClusterConfig {
        let mut config = ClusterConfig::new(cluster, node, self.endpoints());
        config.lease_ttl = Duration::from_secs(3);
        config.identity_grace = Duration::from_secs(1);
        config
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let member = &self.members[i];
        let data = self.dir.join(&member.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", member.name)))
            .unwrap();
        let client_url = format!("http://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd must be installed (apt package etcd-server)");
        self.members[i].child = Some(child);
    }

    /// Waits until the given members answer `etcdctl endpoint health` (which needs a leader).
    pub(crate) fn wait_healthy(&self, members: &[usize]) {
        let endpoints = members
            .iter()
            .map(|&i| format!("http://127.0.0.1:{}", self.members[i].client_port))
            .collect::<Vec<_>>()
            .join(",");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &endpoints, "--dial-timeout", "1s"])
                .args(["--command-timeout", "2s", "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("etcdctl must be installed (apt package etcd-client)");
            if status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd members {members:?} not healthy after 30 s; logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `i` (its data stays).
    pub(crate) fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub(crate) fn start(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Stops every member, deletes their data and starts them empty.
    pub(crate) fn wipe(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
        for member in &self.members {
            std::fs::remove_dir_all(self.dir.join(&member.name)).unwrap();
        }
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        self.wait_healthy(&(0..self.members.len()).collect::<Vec<_>>());
    }

    /// A plain client, for checking what etcd holds and for writing keys as others would.
    pub(crate) async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(self.endpoints(), None)
            .await
            .unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `check` holds, polling; fails the test after `timeout`.
pub(crate) async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The keys under `prefix` and their values, as text.
pub(crate) async fn dump(client: &mut etcd_client::Client, prefix: &str) -> Vec<(String, String)> {
    let answer = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    answer
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_owned(),
                kv.value_str().unwrap().to_owned(),
            )
        })
        .collect()
}
