//! What `axoneme run` says when it lacks a privilege: run as an unprivileged user (`setpriv`,
//! from util-linux, dropping every capability), an agent told to listen on a port below 1024
//! exits naming CAP_NET_BIND_SERVICE and how to grant it. Skipped with a note when the tests
//! do not run as root (they cannot then switch users).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::temp_dir;

/// The unprivileged user and group the agent runs as.
const NOBODY: &str = "65534";

#[test]
fn a_port_below_1024_without_cap_net_bind_service_says_what_is_missing_and_how_to_fix_it() {
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("skipped: switching to an unprivileged user needs root");
        return;
    }
    let dir = temp_dir("privileges");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        r#"api: {socket: api.sock}
endpoints:
  - {name: cache, ips: ["127.0.0.1"], labels: {app: cache}}
listeners:
  - {name: low, listen: "127.0.0.1:99", upstream: "127.0.0.1:11211", endpoint: cache,
     direction: ingress, l7proto: memcache}
"#,
    )
    .unwrap();
    let output = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            env!("CARGO_BIN_EXE_axoneme"),
            "run",
            "--config",
            "config.yaml",
        ])
        .current_dir(&dir)
        .output()
        .expect("setpriv (util-linux) is required");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("listener \"low\": cannot listen on 127.0.0.1:99: Permission denied")
            && stderr.contains("ports below 1024 need CAP_NET_BIND_SERVICE")
            && stderr.contains("setcap cap_net_bind_service=+ep")
            && stderr.contains("listen on port 1024 or above"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
