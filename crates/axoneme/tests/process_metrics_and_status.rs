//! What `axoneme run` tells about itself: `axoneme_build_info` and the process metrics,
//! each compared with what the kernel says of the agent's process read here by other means
//! (per-thread CPU time from schedstat, VmRSS from status, the fd directory, prlimit, the time
//! the test started it), and `axoneme status` as people read it (aligned `Key:   value` lines
//! naming what the test set up), with `--verbose` and `-o json`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{
    agent_cli, connect_from, free_port, r2d2_policy, raw_api, request, signal, spawn_agent,
    temp_dir, wait_for_api, Children, Upstream, LUKE,
};
use serde_json::Value;

/// An agent with one R2-D2 listener in front of `upstream`, two endpoints, one policy and an
/// access log; its directory and listener port.
async fn start_agent(children: &mut Children, upstream: &Upstream) -> (std::path::PathBuf, u16) {
    let dir = temp_dir("process-status");
    let port = free_port();
    std::fs::write(
        dir.join("policy.yaml"),
        r2d2_policy("r2d2-reads", upstream.addr.port(), "{cmd: READ}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            r#"accessLog: {{path: access.log}}
api: {{socket: api.sock}}
drainTimeout: 0
endpoints:
  - {{name: r2d2, ips: ["127.0.0.1"], labels: {{app: r2d2}}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
policies: [policy.yaml]
listeners:
  - {{name: r2d2, listen: "127.0.0.1:{port}", upstream: "{}", endpoint: r2d2,
      direction: ingress, l7proto: r2d2}}
"#,
            upstream.addr
        ),
    )
    .unwrap();
    children.0.push(spawn_agent(&dir));
    wait_for_api(&dir).await;
    (dir, port)
}

/// The agent's metrics text.
async fn metrics(dir: &Path) -> String {
    let (status, body) = raw_api(
        dir,
        "GET /v1/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 200 "), "{status}");
    body
}

/// The value of the sample whose name (labels included) is `name`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// CPU time of the process's threads now, in seconds: the first field of each thread's
/// schedstat (nanoseconds on a CPU).
fn threads_cpu_seconds(pid: u32) -> f64 {
    let mut nanoseconds = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            nanoseconds += text.split(' ').next().unwrap().parse::<u64>().unwrap();
        }
    }
    nanoseconds as f64 / 1e9
}

/// VmRSS of the process, in bytes.
fn vm_rss_bytes(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    kib * 1024.0
}

fn open_fds(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64
}

/// The soft limit on open files of `pid`, as prlimit(1) reads it.
fn soft_file_limit(pid: u32) -> f64 {
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            "--nofile",
            "--output",
            "SOFT",
            "--noheadings",
        ])
        .output()
        .expect("prlimit (util-linux) is required");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    match text.trim() {
        "unlimited" => u64::MAX as f64,
        number => number.parse().unwrap(),
    }
}

fn seconds_since_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `command args` in this test's directory, its standard output trimmed; none if it fails.
fn run(command: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(command)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

#[tokio::test]
async fn the_process_metrics_are_what_the_kernel_says_of_the_agent() {
    let upstream = Upstream::start().await;
    let mut children = Children(Vec::new());
    let spawned_from = seconds_since_epoch();
    let (dir, port) = start_agent(&mut children, &upstream).await;
    let spawned_by = seconds_since_epoch();
    let pid = children.0[0].id();
    // Some work, so that CPU time and memory have grown past their start.
    for _ in 0..20 {
        let mut luke = connect_from(LUKE, ([127, 0, 0, 1], port).into()).await;
        assert_eq!(
            request(&mut luke, "READ /public/map\r\n").await,
            "OK READ /public/map\r\n"
        );
    }

    let (cpu_before, rss_before, fds_before) =
        (threads_cpu_seconds(pid), vm_rss_bytes(pid), open_fds(pid));
    let text = metrics(&dir).await;
    let (cpu_after, rss_after, fds_after) =
        (threads_cpu_seconds(pid), vm_rss_bytes(pid), open_fds(pid));

    let cpu = sample(&text, "process_cpu_seconds_total");
    // The kernel counts CPU time in ticks (10 ms at most); threads that have ended count in
    // the process's total but have no schedstat left here.
    assert!(
        cpu_before - 0.05 <= cpu && cpu <= cpu_after + 0.25,
        "process_cpu_seconds_total {cpu}, threads {cpu_before}..{cpu_after}"
    );
    assert!(cpu > 0.0);
    let rss = sample(&text, "process_resident_memory_bytes");
    assert!(
        rss_before.min(rss_after) * 0.9 <= rss && rss <= rss_before.max(rss_after) * 1.1,
        "process_resident_memory_bytes {rss}, VmRSS {rss_before}..{rss_after}"
    );
    // The agent reads its fd directory through one more descriptor, and API connections come
    // and go.
    let fds = sample(&text, "process_open_fds");
    assert!(
        fds_before.min(fds_after) - 2.0 <= fds && fds <= fds_before.max(fds_after) + 2.0,
        "process_open_fds {fds}, /proc/{pid}/fd {fds_before}..{fds_after}"
    );
    assert_eq!(sample(&text, "process_max_fds"), soft_file_limit(pid));
    let started = sample(&text, "process_start_time_seconds");
    assert!(
        spawned_from - 1.0 <= started && started <= spawned_by + 1.0,
        "process_start_time_seconds {started}, spawned {spawned_from}..{spawned_by}"
    );
    for family in [
        "process_cpu_seconds_total counter",
        "process_resident_memory_bytes gauge",
        "process_open_fds gauge",
        "process_max_fds gauge",
        "process_start_time_seconds gauge",
        "axoneme_build_info gauge",
    ] {
        assert!(text.contains(&format!("# TYPE {family}\n")), "{family}");
    }

    // The build: this crate's version, the compiler that built the tests, the checkout's commit.
    let rustc = run(
        &std::env::var("RUSTC").unwrap_or("rustc".into()),
        &["--version"],
    )
    .unwrap();
    let rustc = rustc.split(' ').nth(1).unwrap();
    let info = text
        .lines()
        .find(|line| line.starts_with("axoneme_build_info{"))
        .unwrap();
    assert!(info.ends_with("} 1"), "{info}");
    assert!(
        info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    assert!(info.contains(&format!("rustc=\"{rustc}\"")), "{info}");
    let commit = info
        .split("commit=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    match run("git", &["rev-parse", "HEAD"]) {
        Some(head) => assert!(
            commit.len() >= 7 && head.starts_with(commit),
            "commit {commit:?}, HEAD {head}"
        ),
        None => assert_eq!(commit, "", "no git checkout, so no commit"),
    }
    signal(&children.0[0], "TERM");
    let _ = children.0[0].wait();
}

/// The lines of `text` that are not indented, as (key, column of the value, value).
fn key_lines(text: &str) -> Vec<(String, usize, String)> {
    text.lines()
        .filter(|line| !line.starts_with(' '))
        .map(|line| {
            let (key, rest) = line.split_once(':').unwrap_or_else(|| panic!("{line:?}"));
            let value = rest.trim_start();
            (key.to_owned(), line.len() - value.len(), value.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn status_reads_like_cilium_status_and_names_what_runs() {
    let upstream = Upstream::start().await;
    let mut children = Children(Vec::new());
    let (dir, port) = start_agent(&mut children, &upstream).await;
    let mut luke = connect_from(LUKE, ([127, 0, 0, 1], port).into()).await;
    assert_eq!(
        request(&mut luke, "READ /public/map\r\n").await,
        "OK READ /public/map\r\n"
    );

    let out = agent_cli(&dir, &["status"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines = key_lines(&text);
    let keys: Vec<&str> = lines.iter().map(|(key, ..)| key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "Status",
            "Axoneme",
            "KVStore",
            "Policy",
            "Endpoints",
            "Proxy Status",
            "Access Log",
            "Monitor",
            "Controller Status"
        ],
        "{text}"
    );
    let column = lines[0].1;
    assert!(
        lines.iter().all(|(_, at, _)| *at == column),
        "values in one column:\n{text}"
    );
    let value = |key: &str| lines.iter().find(|(k, ..)| k == key).unwrap().2.clone();
    assert_eq!(value("Status"), "OK");
    assert!(
        value("Axoneme").starts_with(env!("CARGO_PKG_VERSION")),
        "{text}"
    );
    assert_eq!(value("KVStore"), "Disabled");
    assert!(
        value("Policy").contains(", 1 policy, 0 import errors"),
        "{text}"
    );
    assert_eq!(value("Endpoints"), "2 (0 in audit mode)");
    assert!(
        value("Proxy Status").starts_with("OK, 1 listener, 1 connections open, 1 accepted"),
        "{text}"
    );
    // The path as the configuration gives it.
    assert!(value("Access Log").starts_with("access.log, "), "{text}");
    assert!(value("Monitor").starts_with("0 watchers, "), "{text}");
    // The overload shedder, the loss reporter and the access-log writer.
    assert_eq!(value("Controller Status"), "3/3 healthy");

    let out = agent_cli(&dir, &["status", "--verbose"]);
    let verbose = String::from_utf8(out.stdout).unwrap();
    let listener = verbose
        .lines()
        .find(|line| line.starts_with("  r2d2 "))
        .unwrap_or_else(|| panic!("no listener line in\n{verbose}"));
    let words: Vec<&str> = listener.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "r2d2",
            &format!("127.0.0.1:{port}"),
            "->",
            &upstream.addr.to_string(),
            "r2d2",
            "1",
            "open"
        ]
    );
    for controller in ["overload-shedder", "loss-reporter", "access-log-writer"] {
        assert!(
            verbose
                .lines()
                .any(|line| line.split_whitespace().collect::<Vec<_>>() == [controller, "yes"]),
            "{controller} in\n{verbose}"
        );
    }

    let out = agent_cli(&dir, &["status", "-o", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["policy"]["policies"], 1);
    assert_eq!(json["endpoints"]["total"], 2);
    assert_eq!(json["listeners"][0]["connections"], 1);
    assert_eq!(json["access_log"]["path"], "access.log");
    assert_eq!(json["build"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["controllers"].as_array().unwrap().len(), 3);
    drop(luke);
}
