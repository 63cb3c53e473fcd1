//! The `axoneme` binary as an operator runs it: `run --config`, SIGHUP reloads policy (a bad
//! policy is rejected and the last good one stays), SIGTERM drains and stops it with exit code 0.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect_from, free_port, read_line, request, signal, temp_dir, Upstream};

fn policy(port: u16, rule: &str) -> String {
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: r2d2-obeys-luke}}
spec:
  endpointSelector: {{matchLabels: {{app: r2d2}}}}
  ingress:
    - toPorts:
        - ports: [{{port: "{port}"}}]
          rules: {{l7proto: r2d2, l7: [{rule}]}}
"#
    )
}

/// The proxy process, killed if the test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_policy_and_sigterm_stops_cleanly() {
    let upstream = Upstream::start().await;
    let port = upstream.addr.port();
    let listen_port = free_port();
    let dir = temp_dir("binary");
    std::fs::write(dir.join("policy.yaml"), policy(port, "{cmd: HALT}")).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            r#"endpoints: [{{name: r2d2, ips: ["127.0.0.1"], labels: {{app: r2d2}}}}]
policies: [policy.yaml]
api: {{socket: api.sock}}
drainTimeout: 1
listeners:
  - {{name: r2d2, listen: "127.0.0.1:{listen_port}", upstream: "{}", endpoint: r2d2, direction: ingress}}
"#,
            upstream.addr
        ),
    )
    .unwrap();
    let mut running = Running(
        Command::new(env!("CARGO_BIN_EXE_axoneme"))
            .args(["run", "--config"])
            .arg(dir.join("config.yaml"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut running.0;
    let proxy = format!("127.0.0.1:{listen_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(proxy).await.is_err() {
        assert!(Instant::now() < deadline, "the proxy did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut client = connect_from("127.0.0.9", proxy).await;
    assert_eq!(request(&mut client, "RESET\r\n").await, "ERROR\r\n");

    std::fs::write(dir.join("policy.yaml"), policy(port, "{cmd: RESET}")).unwrap();
    signal(child, "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while request(&mut client, "RESET\r\n").await != "OK RESET\r\n" {
        assert!(Instant::now() < deadline, "the reload did not take effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::write(dir.join("policy.yaml"), policy(port, "{cmd: NOPE}")).unwrap();
    signal(child, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        request(&mut client, "RESET\r\n").await,
        "OK RESET\r\n",
        "the last good policy stays"
    );

    // SIGTERM: the idle client gets the drain time (1 s) to finish, then is closed.
    signal(child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        read_line(&mut client).await,
        "",
        "the drained connection is closed"
    );
    assert!(!dir.join("api.sock").exists(), "the API socket is removed");
}
