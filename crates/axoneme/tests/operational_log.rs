//! The agent's own log (standard error of `axoneme run`): plain text without colours when it
//! is not a terminal, or one JSON object per event with `--log-format json`.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{free_port, temp_dir};

/// Starts the agent in `dir` with one listener and `args` after `run --config config.yaml`.
fn start(dir: &Path, args: &[&str]) -> Child {
    let port = free_port();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            r#"api: {{socket: api.sock}}
endpoints:
  - {{name: r2d2, ips: ["127.0.0.1"], labels: {{app: r2d2}}}}
listeners:
  - {{name: r2d2, listen: "127.0.0.1:{port}", upstream: "127.0.0.1:1", endpoint: r2d2, direction: ingress}}
"#
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_axoneme"))
        .current_dir(dir)
        .args(["run", "--config", "config.yaml"])
        .args(args)
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap()
}

/// The agent's log once it says it listens (up to 10 s), then the agent is stopped.
fn log_once_listening(dir: &Path, mut agent: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(dir.join("agent.log")).unwrap();
        if log.contains("listening") && log.ends_with('\n') {
            agent.kill().unwrap();
            agent.wait().unwrap();
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not listen:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_log_that_is_no_terminal_has_no_colours() {
    let dir = temp_dir("log-text");
    let log = log_once_listening(&dir, start(&dir, &[]));
    assert!(!log.contains('\u{1b}'), "escape codes in:\n{log}");
    assert!(
        log.lines()
            .any(|line| line.contains(" INFO ") && line.contains("listening listener=r2d2")),
        "{log}"
    );
}

#[test]
fn the_json_log_has_an_object_per_event() {
    let dir = temp_dir("log-json");
    let log = log_once_listening(&dir, start(&dir, &["--log-format", "json"]));
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let listening = events
        .iter()
        .find(|event| event["fields"]["message"] == "listening")
        .unwrap_or_else(|| panic!("no listening event in {events:?}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["fields"]["listener"], "r2d2");
    assert!(listening["timestamp"].as_str().is_some());
}
