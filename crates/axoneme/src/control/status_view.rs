//! `axoneme status` for people, shaped like `cilium status`: a verdict line, then one aligned
//! `Key:   value` line per part of the agent (build, kvstore, policy, endpoints, proxy, access
//! log, monitor, controllers), and with `--verbose` the listeners and controllers one by one.
//! It renders the API's status answer only; it asks the agent nothing and decides nothing.

use serde_json::Value;

/// The first line, as `cilium status` opens: `Status: OK`, or `Status: Degraded (...)` naming
/// each reason found in the agent's status: a cluster view gone stale, parser panics, policy
/// imports that failed, access-log entries lost, controllers that are not healthy.
pub(crate) fn verdict(status: &Value) -> String {
    let counters = &status["counters"];
    let count = |key: &str| counters[key].as_u64().unwrap_or(0);
    let mut reasons = Vec::new();
    if status["cluster"]["stale"] == true {
        reasons.push("the cluster's view is stale".to_owned());
    }
    for (key, what) in [
        ("parser_panics", "parser panics"),
        ("policy_import_errors", "policy imports failed"),
        ("access_log_dropped", "access-log entries dropped"),
    ] {
        if count(key) > 0 {
            reasons.push(format!("{what}: {}", count(key)));
        }
    }
    let unhealthy: Vec<&str> = controllers(status)
        .iter()
        .filter(|c| c["healthy"] != true)
        .filter_map(|c| c["name"].as_str())
        .collect();
    if !unhealthy.is_empty() {
        reasons.push(format!("controllers failing: {}", unhealthy.join(", ")));
    }
    if reasons.is_empty() {
        "OK".to_owned()
    } else {
        format!("Degraded ({})", reasons.join("; "))
    }
}

/// The whole status for people: `Key:   value` lines, values in one column; with `verbose`,
/// a line per listener under `Proxy Status` and per controller under `Controller Status`.
pub(crate) fn render(status: &Value, verbose: bool) -> String {
    let mut lines: Vec<(&str, String, Vec<String>)> = vec![
        ("Status", verdict(status), Vec::new()),
        ("Axoneme", build(status), Vec::new()),
        ("KVStore", kvstore(&status["cluster"]), Vec::new()),
        ("Policy", policy(status), Vec::new()),
        ("Endpoints", endpoints(&status["endpoints"]), Vec::new()),
        ("Proxy Status", proxy(status), Vec::new()),
        ("Access Log", access_log(&status["access_log"]), Vec::new()),
        ("Monitor", monitor(&status["monitor"]), Vec::new()),
        ("Controller Status", controller_summary(status), Vec::new()),
    ];
    if verbose {
        lines[5].2 = listener_lines(status);
        lines[8].2 = controller_lines(status);
    }
    let width = lines
        .iter()
        .map(|(key, ..)| key.len() + 1)
        .max()
        .unwrap_or(0)
        + 3;
    let mut out = Vec::new();
    for (key, value, details) in lines {
        out.push(format!("{:<width$}{value}", format!("{key}:")));
        out.extend(details.into_iter().map(|detail| format!("  {detail}")));
    }
    out.join("\n")
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// `0.1.0 (commit 1a2b3c4d5e6f, rustc 1.91.0), up 1h2m3s`
fn build(status: &Value) -> String {
    let build = &status["build"];
    let mut parts = Vec::new();
    if !text(&build["commit"]).is_empty() {
        parts.push(format!("commit {}", text(&build["commit"])));
    }
    if !text(&build["rustc"]).is_empty() {
        parts.push(format!("rustc {}", text(&build["rustc"])));
    }
    let mut line = text(&status["version"]).to_owned();
    if !parts.is_empty() {
        line.push_str(&format!(" ({})", parts.join(", ")));
    }
    format!("{line}, up {}", duration(number(&status["uptime_seconds"])))
}

/// `1h2m3s`, leaving out leading zero units.
fn duration(seconds: u64) -> String {
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

fn kvstore(cluster: &Value) -> String {
    if cluster.is_null() {
        return "Disabled".to_owned();
    }
    let state = if cluster["stale"] == true {
        format!("Stale since {}", text(&cluster["staleSince"]))
    } else {
        "Ok".to_owned()
    };
    format!(
        "{state}   cluster {}, node {}, revision {}, {}/{} members healthy",
        text(&cluster["cluster"]),
        text(&cluster["node"]),
        cluster["revision"],
        number(&cluster["members_healthy"]),
        number(&cluster["members"])
    )
}

fn policy(status: &Value) -> String {
    let policy = &status["policy"];
    format!(
        "revision {}, {} {}, {} import errors",
        number(&policy["revision"]),
        number(&policy["policies"]),
        plural(number(&policy["policies"]), "policy", "policies"),
        number(&policy["import_errors"])
    )
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn endpoints(endpoints: &Value) -> String {
    format!(
        "{} ({} in audit mode)",
        number(&endpoints["total"]),
        number(&endpoints["audit"])
    )
}

fn listeners(status: &Value) -> &[Value] {
    status["listeners"].as_array().map_or(&[], Vec::as_slice)
}

fn proxy(status: &Value) -> String {
    let counters = &status["counters"];
    let count = listeners(status).len() as u64;
    format!(
        "OK, {count} {}, {} connections open, {} accepted, {} refused",
        plural(count, "listener", "listeners"),
        number(&counters["connections_active"]),
        number(&counters["connections_total"]),
        number(&counters["connections_refused"])
    )
}

/// One line per listener: name, address, where it forwards, protocol, connections open.
fn listener_lines(status: &Value) -> Vec<String> {
    let rows: Vec<[String; 5]> = listeners(status)
        .iter()
        .map(|l| {
            let upstream = match text(&l["upstream"]) {
                "" => text(&l["mode"]).to_owned(),
                upstream => upstream.to_owned(),
            };
            let protocol = match text(&l["l7proto"]) {
                "" => "-",
                proto => proto,
            };
            [
                text(&l["name"]).to_owned(),
                text(&l["address"]).to_owned(),
                format!("-> {upstream}"),
                protocol.to_owned(),
                format!("{} open", number(&l["connections"])),
            ]
        })
        .collect();
    aligned(&rows)
}

fn access_log(log: &Value) -> String {
    if log.is_null() {
        return "Disabled".to_owned();
    }
    format!(
        "{}, {}/{} bytes queued, {} dropped, {} write errors",
        text(&log["path"]),
        number(&log["queue_bytes"]),
        number(&log["queue_limit_bytes"]),
        number(&log["dropped"]),
        number(&log["write_errors"])
    )
}

fn monitor(monitor: &Value) -> String {
    format!(
        "{} watchers, {}/{} bytes queued per watcher, {} dropped, {}/{} bytes of recent flows",
        number(&monitor["watchers"]),
        number(&monitor["queue_bytes"]),
        number(&monitor["queue_limit_bytes"]),
        number(&monitor["dropped"]),
        number(&monitor["recent_bytes"]),
        number(&monitor["recent_limit_bytes"])
    )
}

fn controllers(status: &Value) -> &[Value] {
    status["controllers"].as_array().map_or(&[], Vec::as_slice)
}

fn controller_summary(status: &Value) -> String {
    let all = controllers(status);
    let healthy = all.iter().filter(|c| c["healthy"] == true).count();
    format!("{healthy}/{} healthy", all.len())
}

/// One line per controller: name, healthy or not, and what is wrong.
fn controller_lines(status: &Value) -> Vec<String> {
    let mut rows = vec![[
        "Name".to_owned(),
        "Healthy".to_owned(),
        "Failure".to_owned(),
    ]];
    rows.extend(controllers(status).iter().map(|c| {
        [
            text(&c["name"]).to_owned(),
            if c["healthy"] == true { "yes" } else { "no" }.to_owned(),
            text(&c["failure"]).to_owned(),
        ]
    }));
    aligned(&rows)
}

/// `rows` in columns three spaces apart, trailing blanks cut.
fn aligned<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status() -> Value {
        json!({
            "version": "0.1.0",
            "build": {"version": "0.1.0", "commit": "1a2b3c4d5e6f", "rustc": "1.91.0"},
            "uptime_seconds": 3723,
            "policy": {"revision": 3, "policies": 2, "import_errors": 0},
            "endpoints": {"total": 5, "audit": 1},
            "listeners": [
                {"name": "memcached", "address": "127.0.0.1:4001", "upstream": "127.0.0.1:11211",
                 "l7proto": "memcache", "mode": "proxy", "connections": 3},
                {"name": "tproxy", "address": "0.0.0.0:4002", "mode": "transparent",
                 "connections": 0},
            ],
            "cluster": null,
            "access_log": {"path": "/var/log/axoneme.log", "queue_bytes": 0,
                           "queue_limit_bytes": 1048576, "dropped": 0, "write_errors": 0},
            "monitor": {"watchers": 2, "queue_bytes": 10, "queue_limit_bytes": 65536,
                        "dropped": 0, "recent_bytes": 1234, "recent_limit_bytes": 1048576},
            "controllers": [
                {"name": "overload-shedder", "healthy": true},
                {"name": "access-log-writer", "healthy": false,
                 "failure": "1 writes failed, the last: No space left on device"},
            ],
            "counters": {"connections_active": 3, "connections_total": 120,
                         "connections_refused": 4, "parser_panics": 0,
                         "policy_import_errors": 0, "access_log_dropped": 0},
        })
    }

    #[test]
    fn status_opens_with_ok_or_degraded_and_each_reason() {
        let healthy = json!({
            "cluster": null,
            "counters": {"parser_panics": 0, "policy_import_errors": 0, "access_log_dropped": 0,
                         "monitor_dropped": 7},
            "controllers": [{"name": "overload-shedder", "healthy": true}],
        });
        assert_eq!(verdict(&healthy), "OK");
        let troubled = json!({
            "cluster": {"stale": true},
            "counters": {"parser_panics": 2, "policy_import_errors": 0, "access_log_dropped": 15},
            "controllers": [{"name": "kvstore-sync", "healthy": false}],
        });
        assert_eq!(
            verdict(&troubled),
            "Degraded (the cluster's view is stale; parser panics: 2; access-log entries \
             dropped: 15; controllers failing: kvstore-sync)"
        );
    }

    #[test]
    fn each_part_is_one_aligned_line() {
        assert_eq!(
            render(&status(), false),
            "\
Status:              Degraded (controllers failing: access-log-writer)
Axoneme:             0.1.0 (commit 1a2b3c4d5e6f, rustc 1.91.0), up 1h2m3s
KVStore:             Disabled
Policy:              revision 3, 2 policies, 0 import errors
Endpoints:           5 (1 in audit mode)
Proxy Status:        OK, 2 listeners, 3 connections open, 120 accepted, 4 refused
Access Log:          /var/log/axoneme.log, 0/1048576 bytes queued, 0 dropped, 0 write errors
Monitor:             2 watchers, 10/65536 bytes queued per watcher, 0 dropped, 1234/1048576 bytes of recent flows
Controller Status:   1/2 healthy"
        );
    }

    #[test]
    fn verbose_lists_listeners_and_controllers_under_their_lines() {
        let text = render(&status(), true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            &lines[6..8],
            [
                "  memcached   127.0.0.1:4001   -> 127.0.0.1:11211   memcache   3 open",
                "  tproxy      0.0.0.0:4002     -> transparent       -          0 open",
            ]
        );
        assert_eq!(
            &lines[lines.len() - 3..],
            [
                "  Name                Healthy   Failure",
                "  overload-shedder    yes",
                "  access-log-writer   no        1 writes failed, the last: No space left on device",
            ]
        );
    }

    #[test]
    fn a_cluster_node_shows_its_kvstore() {
        let cluster = json!({"cluster": "galaxy", "node": "yavin", "stale": false,
                             "revision": 42, "members": 3, "members_healthy": 3});
        assert_eq!(
            kvstore(&cluster),
            "Ok   cluster galaxy, node yavin, revision 42, 3/3 members healthy"
        );
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(61), "1m1s");
    }
}
