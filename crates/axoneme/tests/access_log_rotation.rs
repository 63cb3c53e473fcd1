//! The access-log file of a running `axoneme run` under rotation: moved away and reopened by
//! SIGHUP or by `axoneme access-log reopen`, the new file takes the new entries and the moved
//! one keeps the old; deleted, it is made anew within a couple of seconds.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use common::{
    agent_cli, connect_from, free_port, r2d2_policy, request, signal, spawn_agent, temp_dir,
    wait_for_api, Upstream, LUKE,
};

/// A running agent whose access log is `access.log` in its directory.
struct Running {
    child: Child,
    dir: PathBuf,
    proxy_port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    async fn start(name: &str, upstream: &Upstream) -> Running {
        let dir = temp_dir(name);
        let proxy_port = free_port();
        std::fs::write(
            dir.join("policy.yaml"),
            r2d2_policy("base", upstream.addr.port(), "{cmd: READ}"),
        )
        .unwrap();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                r#"accessLog: {{path: access.log}}
api: {{socket: api.sock}}
endpoints:
  - {{name: r2d2, ips: ["127.0.0.1"], labels: {{app: r2d2}}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
policies: [policy.yaml]
listeners:
  - {{name: r2d2, listen: "127.0.0.1:{proxy_port}", upstream: "{}", endpoint: r2d2, direction: ingress}}
"#,
                upstream.addr
            ),
        )
        .unwrap();
        let child = spawn_agent(&dir);
        let running = Running {
            child,
            dir,
            proxy_port,
        };
        wait_for_api(&running.dir).await;
        running
    }

    fn cli(&self, args: &[&str]) -> Output {
        agent_cli(&self.dir, args)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Sends `file` as the path of one allowed READ, which the access log records.
    async fn read(&self, file: &str) {
        let proxy = format!("127.0.0.1:{}", self.proxy_port).parse().unwrap();
        let mut luke = connect_from(LUKE, proxy).await;
        let line = format!("READ {file}\r\n");
        assert_eq!(
            request(&mut luke, &line).await,
            format!("OK READ {file}\r\n")
        );
    }
}

/// The `file` fields of the access-log entries at `path`, once there are `n` (what there is
/// after 5 s).
async fn files_logged(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let files: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).unwrap();
                entry["generic_l7"]["fields"]["file"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .filter(|file| !file.is_empty())
            .collect();
        if files.len() >= n || Instant::now() > deadline {
            return files;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `path` exists, for at most 5 s.
async fn exists_soon(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !path.exists() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_log_file_is_reopened_by_sighup_and_by_the_cli() {
    let upstream = Upstream::start().await;
    let agent = Running::start("rotation", &upstream).await;
    let log = agent.path("access.log");
    agent.read("/first").await;
    assert_eq!(files_logged(&log, 1).await, ["/first"]);

    std::fs::rename(&log, agent.path("access.log.1")).unwrap();
    signal(&agent.child, "HUP");
    assert!(exists_soon(&log).await, "SIGHUP made no new file");
    agent.read("/second").await;
    assert_eq!(files_logged(&log, 1).await, ["/second"]);
    assert_eq!(
        files_logged(&agent.path("access.log.1"), 1).await,
        ["/first"]
    );

    std::fs::rename(&log, agent.path("access.log.2")).unwrap();
    let output = agent.cli(&["access-log", "reopen"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with("path: ") && stdout.contains("access.log"),
        "{stdout}"
    );
    assert!(log.exists(), "the reopen is done when the command returns");
    agent.read("/third").await;
    assert_eq!(files_logged(&log, 1).await, ["/third"]);
    assert_eq!(
        files_logged(&agent.path("access.log.2"), 1).await,
        ["/second"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_log_file_is_made_anew_and_takes_the_next_entries() {
    let upstream = Upstream::start().await;
    let agent = Running::start("deleted", &upstream).await;
    let log = agent.path("access.log");
    agent.read("/before").await;
    assert_eq!(files_logged(&log, 1).await, ["/before"]);

    std::fs::remove_file(&log).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut sent = 0;
    while !log.exists() {
        assert!(Instant::now() < deadline, "no new file within 3 s");
        agent.read(&format!("/after-{sent}")).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.read("/last").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let files = loop {
        let files = files_logged(&log, 1).await;
        if files.iter().any(|f| f == "/last") || Instant::now() > deadline {
            break files;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(files.iter().any(|f| f == "/last"), "{files:?}");
    assert!(!files.iter().any(|f| f == "/before"), "{files:?}");
    let agent_log = std::fs::read_to_string(agent.path("agent.log")).unwrap();
    assert_eq!(
        agent_log.matches("deleted or replaced").count(),
        1,
        "{agent_log}"
    );
}
