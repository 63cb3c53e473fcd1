//! A real etcd for the agent's cluster-mode tests: one member on free loopback ports, with its
//! data in a temporary directory, stopped and started again on demand (its data kept), and
//! killed when the test ends. `etcd` and `etcdctl` come from the Debian packages
//! `etcd-server` and `etcd-client`, which `scripts/test.sh` installs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd member.
pub(crate) struct Etcd {
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Starts a member and returns once it answers as healthy.
    pub(crate) fn start(name: &str) -> Etcd {
        let dir = super::temp_dir(&format!("etcd-{name}"));
        // Both ports chosen while both are held, so they differ.
        let held: Vec<std::net::TcpListener> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(held);
        let mut etcd = Etcd {
            dir,
            client_port: ports[0],
            peer_port: ports[1],
            child: None,
        };
        etcd.resume();
        etcd
    }

    /// The client URL, for `cluster.kvstore.endpoints`.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Runs `etcdctl` against the member with `args`, which must succeed; its output.
    pub(crate) fn etcdctl(&self, args: &[&str]) -> String {
        let output = Command::new("etcdctl")
            .args(["--endpoints", &self.url()])
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

    /// Kills the member, as a crash or a lost quorum would look to the agents.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the member again on its data and ports, and waits until it is healthy.
    pub(crate) fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "m0"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("m0={peer}")])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd must be installed (apt package etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let healthy = Command::new("etcdctl")
                .args(["--endpoints", &client])
                .args(["--dial-timeout", "1s", "--command-timeout", "2s"])
                .args(["endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("etcdctl must be installed (apt package etcd-client)")
                .success();
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy after 30 s; its log is {}",
                self.dir.join("etcd.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
