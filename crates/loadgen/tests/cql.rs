//! The CQL load against a real CQL server: `cql-fixture`, served in this process on a free
//! port, driven by the `axoneme-loadgen` binary for about a second per run.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use cql_fixture::journal::Journal;
use cql_fixture::server;
use cql_fixture::store::{self, Store};

/// Starts `cql-fixture` with `store` on a free port of 127.0.0.1, on a runtime of its own that
/// lives as long as the test process, and returns its address.
fn start_fixture(store: Store) -> SocketAddr {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a free port");
    let address = listener.local_addr().expect("a bound address");
    std::thread::spawn(move || {
        runtime.block_on(server::serve(
            listener,
            Arc::new(Mutex::new(store)),
            Arc::new(Journal::off()),
        ))
    });
    address
}

/// Runs `axoneme-loadgen cql` against `target` with `args`, for 1 s without warm-up.
fn run_load(target: SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_axoneme-loadgen"))
        .args(["cql", "--target", &target.to_string()])
        .args(["--duration", "1", "--warmup", "0", "--keys", "50", "--json"])
        .args(args)
        .output()
        .expect("axoneme-loadgen runs")
}

#[test]
fn drives_a_cql_server_prepared_and_with_query() {
    let fixture = start_fixture(Store::new());
    // The first run creates the keyspace and the table; the second finds them.
    let runs = [
        ("prepared", ["--connections", "4", "--pipeline", "8"]),
        ("query", ["--connections", "2", "--pipeline", "1"]),
    ];
    for (mode, args) in runs {
        let output = run_load(fixture, &[&["--mode", mode][..], &args].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{mode}: axoneme-loadgen failed: {stderr}"
        );
        let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(result["mode"], mode);
        assert_eq!(result["protocol"], "cql");
        assert_eq!(result["errors"], 0, "{mode}: {result}");
        let ops = result["ops"].as_u64().expect("ops");
        assert!(ops > 100, "{mode}: only {ops} requests answered: {result}");
        let p50 = result["p50_us"].as_f64().expect("p50");
        let p99 = result["p99_us"].as_f64().expect("p99");
        assert!(0.0 < p50 && p50 <= p99, "{mode}: {result}");
    }
}

#[test]
fn stops_with_the_server_error_when_the_rows_cannot_be_written() {
    // The table exists, but with another type for `present`: every INSERT is invalid.
    let mut store = Store::new();
    let node: SocketAddr = "127.0.0.1:9042".parse().unwrap();
    for statement in [
        "CREATE KEYSPACE attendance WITH replication = {'class': 'SimpleStrategy'}",
        "CREATE TABLE attendance.daily_records (loc text, creation timeuuid, present int, \
         PRIMARY KEY (loc, creation))",
    ] {
        let statement = store::parse(statement).expect("valid CQL");
        store.execute(&statement, None, &[], node).expect("created");
    }
    let output = run_load(start_fixture(store), &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("writing the rows before the load") && stderr.contains("ERROR 0x2200"),
        "{stderr}"
    );
}
