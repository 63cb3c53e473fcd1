//! Real etcd members for the tests: started on free ports in a temporary directory, stopped,
//! restarted and wiped on demand, and killed when the test ends.

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axoneme_cluster::{ClusterConfig, TlsConfig};

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
    /// The certificates when the members serve TLS and require client certificates.
    tls: Option<TlsFiles>,
}

/// PEM files made for one test by `openssl`: a CA, the members' certificate (for
/// 127.0.0.1) and a client certificate.
struct TlsFiles {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Etcd {
    /// One member.
    pub(crate) fn single() -> Etcd {
        Etcd::start_cluster(1, false)
    }

    /// One member serving TLS only, requiring a client certificate signed by its CA.
    pub(crate) fn single_tls() -> Etcd {
        Etcd::start_cluster(1, true)
    }

    /// `size` members forming one cluster; returns once every member is healthy.
    pub(crate) fn cluster(size: usize) -> Etcd {
        Etcd::start_cluster(size, false)
    }

    fn start_cluster(size: usize, tls: bool) -> Etcd {
        // The crate's log, shown for failed tests (`AXONEME_LOG=debug` for more).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("AXONEME_LOG")
                    .unwrap_or_else(|_| "axoneme_cluster=info".into()),
            )
            .with_test_writer()
            .try_init();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let token = format!("axoneme-etcd-{}-{n}", std::process::id());
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
        let tls = tls.then(|| make_certificates(&dir));
        let mut etcd = Etcd {
            dir,
            token,
            members,
            tls,
        };
        for i in 0..size {
            etcd.spawn(i);
        }
        etcd.wait_healthy(&(0..size).collect::<Vec<_>>());
        etcd
    }

    /// The client URLs of every member.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| self.client_url(m)).collect()
    }

    fn client_url(&self, member: &Member) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", member.client_port)
    }

    /// A cluster configuration for `node` with a short lease and grace period.
    pub(crate) fn config(&self, cluster: &str, node: &str) -> ClusterConfig {
        let mut config = ClusterConfig::new(cluster, node, self.endpoints());
        config.lease_ttl = Duration::from_secs(3);
        config.identity_grace = Duration::from_secs(1);
        config.kvstore.tls = self.tls.as_ref().map(|tls| TlsConfig {
            ca: tls.ca.display().to_string(),
            cert: tls.client_cert.display().to_string(),
            key: tls.client_key.display().to_string(),
        });
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
        let client_url = self.client_url(member);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
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
            .map(|&i| self.client_url(&self.members[i]))
            .collect::<Vec<_>>()
            .join(",");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self
                .etcdctl(&endpoints)
                .args(["--dial-timeout", "1s", "--command-timeout", "2s"])
                .args(["endpoint", "health"])
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

    /// An `etcdctl` command for `endpoints`, with the client certificate when TLS is on.
    fn etcdctl(&self, endpoints: &str) -> Command {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoints]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        command
    }

    /// Creates the user `root` with `password` and enables authentication.
    pub(crate) fn enable_auth(&self, password: &str) {
        let endpoints = self.endpoints().join(",");
        for args in [
            vec!["user", "add", "root", "--interactive=false"],
            vec!["auth", "enable"],
        ] {
            let mut command = self.etcdctl(&endpoints);
            command.args(&args);
            if args[0] == "user" {
                command.arg(format!("--new-user-password={password}"));
            }
            let output = command.output().unwrap();
            assert!(
                output.status.success(),
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
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

/// Makes a CA, a certificate for the members (127.0.0.1) and a client certificate with
/// `openssl`, in `dir`.
fn make_certificates(dir: &std::path::Path) -> TlsFiles {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=axoneme-test-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(&ca);
    for (name, usage) in [
        ("server", "serverAuth,clientAuth"),
        ("client", "clientAuth"),
    ] {
        let mut request = vec!["req", "-subj"];
        let subject = format!("/CN=axoneme-test-{name}");
        request.push(&subject);
        request.extend(ec);
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        request.extend(["-keyout", &key, "-out", &csr]);
        openssl(&request);
        let extensions = format!("{name}.ext");
        std::fs::write(
            path(&extensions),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1\n"
            ),
        )
        .unwrap();
        let pem = format!("{name}.pem");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &extensions,
            "-out",
            &pem,
        ]);
    }
    TlsFiles {
        ca: path("ca.pem"),
        server_cert: path("server.pem"),
        server_key: path("server.key"),
        client_cert: path("client.pem"),
        client_key: path("client.key"),
    }
}
