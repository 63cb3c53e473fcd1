//! Real etcd members for the tests: one to three `etcd` processes (Debian's `etcd-server`)
//! forming one cluster on free ports of a chosen address, with their data and logs in a
//! temporary directory; a member is stopped, started again on its data, or the whole cluster
//! wiped and started empty, on demand; optionally TLS only, with client certificates made by
//! `openssl`. Every member is killed and the directory removed when the value is dropped.
//!
//! It knows etcd's command line and `etcdctl` only; what the tests store in etcd, and the
//! clients they judge, are theirs.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// How to start an etcd cluster.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// How many members (1 to 3).
    pub members: usize,
    /// TLS only, requiring a client certificate signed by the test CA.
    pub tls: bool,
    /// The address every member listens on, for clients and peers.
    pub host: IpAddr,
}

impl Default for EtcdOptions {
    fn default() -> EtcdOptions {
        EtcdOptions {
            members: 1,
            tls: false,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// An etcd cluster of one or more members, each its own `etcd` process.
pub struct Etcd {
    dir: PathBuf,
    token: String,
    host: IpAddr,
    members: Vec<Member>,
    tls: Option<TlsFiles>,
}

/// PEM files made for one cluster by `openssl`: a CA, the members' certificate (for the
/// cluster's address) and a client certificate.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Etcd {
    /// One member on 127.0.0.1.
    pub fn single() -> Etcd {
        Etcd::start_with(EtcdOptions::default())
    }

    /// One member on 127.0.0.1 serving TLS only, requiring a client certificate.
    pub fn single_tls() -> Etcd {
        Etcd::start_with(EtcdOptions {
            tls: true,
            ..EtcdOptions::default()
        })
    }

    /// `members` members on 127.0.0.1 forming one cluster.
    pub fn cluster(members: usize) -> Etcd {
        Etcd::start_with(EtcdOptions {
            members,
            ..EtcdOptions::default()
        })
    }

    /// Starts the cluster `options` describes; returns once every member is healthy.
    pub fn start_with(options: EtcdOptions) -> Etcd {
        assert!(
            (1..=3).contains(&options.members),
            "an etcd cluster of 1 to 3 members, not {}",
            options.members
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let token = format!("axoneme-etcd-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&token);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Hold every listener until all ports are chosen, so none is chosen twice.
        let listeners: Vec<TcpListener> = (0..options.members * 2)
            .map(|_| TcpListener::bind((options.host, 0)).unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let members = (0..options.members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let tls = options.tls.then(|| make_certificates(&dir, options.host));
        let mut etcd = Etcd {
            dir,
            token,
            host: options.host,
            members,
            tls,
        };
        for i in 0..options.members {
            etcd.spawn(i);
        }
        etcd.wait_healthy(&etcd.all());
        etcd
    }

    /// The indexes of all members.
    pub fn all(&self) -> Vec<usize> {
        (0..self.members.len()).collect()
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!(
            "{scheme}://{}:{}",
            self.host_in_url(),
            self.members[i].client_port
        )
    }

    fn host_in_url(&self) -> String {
        match self.host {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }
    }

    /// The certificates, when the members serve TLS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The directory holding the members' data and logs (`m<i>.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn spawn(&mut self, i: usize) {
        let host = self.host_in_url();
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://{host}:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let client_url = self.endpoint(i);
        let member = &self.members[i];
        assert!(member.child.is_none(), "etcd member {i} is already running");
        let data = self.dir.join(&member.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", member.name)))
            .unwrap();
        let peer_url = format!("http://{host}:{}", member.peer_port);
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

    /// Waits (up to 30 s) until the given members answer `etcdctl endpoint health`, which
    /// needs a leader, so a quorum.
    pub fn wait_healthy(&self, members: &[usize]) {
        let endpoints = members
            .iter()
            .map(|&i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self
                .etcdctl_command(&endpoints)
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

    /// An `etcdctl` command for `endpoints` (comma-separated), with the client certificate
    /// when TLS is on.
    pub fn etcdctl_command(&self, endpoints: &str) -> Command {
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

    /// Runs `etcdctl` against every member with `args`, which must succeed; its output.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let output = self
            .etcdctl_command(&self.endpoints().join(","))
            .args(args)
            .output()
            .expect("etcdctl must be installed (apt package etcd-client)");
        assert!(
            output.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Creates the user `root` with `password` and enables authentication.
    pub fn enable_auth(&self, password: &str) {
        self.etcdctl(&[
            "user",
            "add",
            "root",
            "--interactive=false",
            &format!("--new-user-password={password}"),
        ]);
        self.etcdctl(&["auth", "enable"]);
    }

    /// Kills member `i`, as a crash would; its data stays.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data and ports. It is healthy only once a quorum of
    /// members runs: wait for that with [`Etcd::wait_healthy`].
    pub fn start(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Stops every member, deletes their data and starts them empty; returns once they are
    /// healthy.
    pub fn wipe(&mut self) {
        for i in self.all() {
            self.stop(i);
        }
        for member in &self.members {
            let data = self.dir.join(&member.name);
            if data.exists() {
                std::fs::remove_dir_all(data).unwrap();
            }
        }
        for i in self.all() {
            self.spawn(i);
        }
        self.wait_healthy(&self.all());
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in self.all() {
            self.stop(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes a CA, a certificate for the members (`host`) and a client certificate with
/// `openssl`, in `dir`.
fn make_certificates(dir: &Path, host: IpAddr) -> TlsFiles {
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
                 extendedKeyUsage={usage}\nsubjectAltName=IP:{host}\n"
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
