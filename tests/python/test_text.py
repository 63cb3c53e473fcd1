"""The text protocol through the proxy under the Rebels policy: pymemcache as applications use it,
and raw sockets where the exact bytes and their order matter."""

import subprocess

import pytest
from pymemcache.exceptions import MemcacheClientError

import memcached_checks
from conftest import (DEADLINE, DENIED, JEDI, MAINTENANCE, MIB, MONITORING, POLICY_NAME,
                      STRANGER, allows_nothing_policy, axoneme_bin, connect_from, expect_closed,
                      monitoring_policy, read_exactly, read_get_reply, read_line, text_client,
                      write_config)
from memcached_checks import FLEET, TRICKY, big_value


def test_maintenance_may_write_and_read_the_fleet_keys(proxy, memcached):
    droid = text_client(proxy, MAINTENANCE)
    key, counter = FLEET + "x-wing", FLEET + "count"
    assert droid.set(key, b"red five") is True
    assert droid.get(key) == b"red five"
    assert droid.append(key, b" standing by") is True
    assert droid.prepend(key, b"this is ") is True
    assert droid.replace(key, b"red leader") is True
    assert droid.add(counter, b"1") is True
    assert droid.incr(counter, 41) == 42
    assert droid.decr(counter, 2) == 40
    value, cas = droid.gets(key)
    assert value == b"red leader"
    assert droid.cas(key, b"gold leader", cas) is True
    assert droid.touch(key, 3600) is True
    assert droid.delete(counter) is True
    assert memcached.get(key) == b"gold leader"
    assert memcached.get(counter) is None
    entries = proxy.entries(12)
    assert [e["entry_type"] for e in entries] == ["Request"] * 12
    assert {e["policy_name"] for e in entries} == {POLICY_NAME}
    assert [(e["generic_l7"]["fields"]["command"], e["generic_l7"]["fields"]["keys"])
            for e in entries[:8]] == [
        ("set", key), ("get", key), ("append", key), ("prepend", key), ("replace", key),
        ("add", counter), ("incr", counter), ("decr", counter)]


def test_maintenance_is_denied_keys_outside_the_fleet(proxy, memcached):
    droid = text_client(proxy, MAINTENANCE)
    memcached.put("empire/deathstar", b"plans")
    for attempt in (lambda: droid.set("empire/deathstar", b"stolen"),
                    lambda: droid.get("empire/deathstar"),
                    lambda: droid.delete("empire/deathstar"),
                    lambda: droid.incr("empire/deathstar", 1)):
        with pytest.raises(MemcacheClientError) as denied:
            attempt()
        assert denied.value.args == (b"access denied",)
    assert memcached.get("empire/deathstar") == b"plans"
    assert proxy.summary(4) == [
        ("Denied", "set", "empire/deathstar"),
        ("Denied", "get", "empire/deathstar"),
        ("Denied", "delete", "empire/deathstar"),
        ("Denied", "incr", "empire/deathstar"),
    ]
    first = proxy.entries(4)[0]
    assert first["generic_l7"]["proto"] == "memcache"
    assert first["source_address"].startswith(MAINTENANCE + ":")
    assert first["source_labels"] == [
        "function=fleet-maintenance",
        "k8s:io.kubernetes.pod.namespace=default",
    ]
    assert first["destination_labels"] == [
        "app=memcached",
        "k8s:io.kubernetes.pod.namespace=default",
    ]
    assert first["is_ingress"] is True


def test_monitoring_may_only_read_the_fleet_keys(proxy, memcached):
    memcached.put(FLEET + "falcon", b"fastest hunk of junk")
    monitor = text_client(proxy, MONITORING)
    assert monitor.get(FLEET + "falcon") == b"fastest hunk of junk"
    assert monitor.gets(FLEET + "falcon")[0] == b"fastest hunk of junk"
    for attempt in (lambda: monitor.set(FLEET + "falcon", b"scrap"),
                    lambda: monitor.add(FLEET + "new", b"1"),
                    lambda: monitor.append(FLEET + "falcon", b"!"),
                    lambda: monitor.delete(FLEET + "falcon"),
                    lambda: monitor.touch(FLEET + "falcon", 1),
                    lambda: monitor.incr(FLEET + "falcon", 1)):
        with pytest.raises(MemcacheClientError, match="access denied"):
            attempt()
    assert monitor.get(FLEET + "falcon") == b"fastest hunk of junk"
    assert memcached.get(FLEET + "falcon") == b"fastest hunk of junk"
    assert memcached.get(FLEET + "new") is None
    assert [t for t, _, _ in proxy.summary(9)] == ["Request"] * 2 + ["Denied"] * 6 + ["Request"]


def test_commands_without_keys_never_match_key_rules(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    droid = text_client(proxy, MAINTENANCE)
    for attempt in (droid.version, droid.stats, droid.flush_all):
        with pytest.raises(MemcacheClientError, match="access denied"):
            attempt()
    assert memcached.get(FLEET + "a") == b"A", "flush_all was not forwarded"
    assert proxy.summary(3) == [("Denied", "version", ""), ("Denied", "stats", ""),
                                ("Denied", "flush_all", "")]


def test_a_jedi_may_do_anything(proxy, memcached):
    jedi = text_client(proxy, JEDI)
    assert jedi.set("empire/deathstar", b"exhaust port") is True
    assert jedi.get("empire/deathstar") == b"exhaust port"
    assert jedi.version()
    assert int(jedi.stats()[b"curr_items"]) == 1
    assert jedi.flush_all() is True
    assert memcached.get("empire/deathstar") is None
    assert [t for t, _, _ in proxy.summary(5)] == ["Request"] * 5


def test_gat_needs_its_own_rule(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    for source, reply in ((MAINTENANCE, DENIED), (MONITORING, DENIED),
                          (JEDI, b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n")):
        sock = connect_from(source, proxy.addr)
        sock.sendall(b"gat 60 alliance/fleet/a\r\n")
        assert read_get_reply(sock) == reply, source
    assert proxy.summary(3) == [("Denied", "gat", FLEET + "a")] * 2 + [("Request", "gat", FLEET + "a")]


def test_a_multi_get_with_one_forbidden_key_is_denied_whole(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    memcached.put(FLEET + "b", b"B")
    memcached.put("empire/plans", b"P")
    monitor = text_client(proxy, MONITORING)
    assert monitor.get_many([FLEET + "a", FLEET + "b"]) == {FLEET + "a": b"A", FLEET + "b": b"B"}
    with pytest.raises(MemcacheClientError, match="access denied"):
        monitor.get_many([FLEET + "a", "empire/plans", FLEET + "b"])
    with pytest.raises(MemcacheClientError, match="access denied"):
        monitor.gets_many([FLEET + "a", "empire/plans"])
    assert proxy.summary(3)[:2] == [
        ("Request", "get", "alliance/fleet/a, alliance/fleet/b"),
        ("Denied", "get", "alliance/fleet/a, empire/plans, alliance/fleet/b"),
    ]
    assert proxy.summary(3)[2][0] == "Denied"


def test_a_denied_noreply_request_stores_nothing_and_the_connection_goes_on(proxy, memcached):
    memcached.put(FLEET + "falcon", b"original")
    monitor = text_client(proxy, MONITORING)
    assert monitor.get(FLEET + "falcon") == b"original"
    connection = monitor.sock
    assert monitor.set(FLEET + "falcon", b"overwritten", noreply=True) is True
    assert monitor.delete(FLEET + "falcon", noreply=True) is True
    assert monitor.flush_all(noreply=True) is True
    assert monitor.get(FLEET + "falcon") == b"original"
    assert monitor.sock is connection, "the same connection served every request"
    assert memcached.get(FLEET + "falcon") == b"original"
    assert proxy.summary(5) == [
        ("Request", "get", FLEET + "falcon"), ("Denied", "set", FLEET + "falcon"),
        ("Denied", "delete", FLEET + "falcon"), ("Denied", "flush_all", ""),
        ("Request", "get", FLEET + "falcon")]


def test_pipelined_requests_get_their_replies_and_denials_in_order(proxy, memcached):
    memcached_checks.check_pipelined_requests_get_their_replies_and_denials_in_order(proxy, memcached)


def test_a_denial_after_noreply_requests_adds_no_reply_of_its_own(proxy, memcached):
    droid = connect_from(MAINTENANCE, proxy.addr)
    droid.sendall(b"set alliance/fleet/n 0 0 1 noreply\r\nN\r\n"
                  b"incr alliance/fleet/n 1 noreply\r\n"
                  b"set empire/plans 0 0 1\r\nZ\r\n"
                  b"get alliance/fleet/n\r\n")
    # Whatever the proxy does to learn where the noreply requests' (absent) replies end stays
    # between it and memcached.
    expected = DENIED + b"VALUE alliance/fleet/n 0 1\r\nN\r\nEND\r\n"
    assert read_exactly(droid, len(expected)) == expected
    droid.sendall(b"version\r\n")
    assert read_get_reply(droid) == DENIED, "nothing extra came before this reply"
    assert memcached.get("empire/plans") is None


def test_a_command_line_longer_than_memcached_accepts_closes_the_connection(proxy, memcached):
    jedi = connect_from(JEDI, proxy.addr)
    try:
        jedi.sendall(b"delete " + b"k" * 4096 + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    expect_closed(jedi)


def test_a_thousand_denials_pipelined_behind_an_allowed_request(proxy, memcached):
    memcached_checks.check_a_thousand_denials_pipelined_behind_an_allowed_request(proxy, memcached)


def test_values_that_look_like_protocol_pass_intact(proxy, memcached):
    droid = text_client(proxy, MAINTENANCE)
    assert droid.set(FLEET + "tricky", TRICKY) is True
    assert droid.set(FLEET + "spoof", b"\r\n") is True
    assert droid.get(FLEET + "tricky") == TRICKY
    assert droid.get_many([FLEET + "tricky", FLEET + "spoof"]) == {
        FLEET + "tricky": TRICKY, FLEET + "spoof": b"\r\n"}
    assert memcached.get(FLEET + "tricky") == TRICKY


def test_a_one_mebibyte_value_is_stored_and_read_back(proxy, memcached):
    value = big_value()
    droid = text_client(proxy, MAINTENANCE)
    assert droid.set(FLEET + "big", value) is True
    assert memcached.get(FLEET + "big") == value
    assert droid.get(FLEET + "big") == value
    assert droid.get_many([FLEET + "big", "alliance/fleet/none"]) == {FLEET + "big": value}
    monitor = text_client(proxy, MONITORING)
    assert monitor.get(FLEET + "big") == value
    # A denied 1 MiB data block is dropped whole: the next request is read after it.
    with pytest.raises(MemcacheClientError, match="access denied"):
        monitor.set(FLEET + "big", value[::-1])
    assert monitor.get(FLEET + "big") == value
    # Pipelined: the denial waits until the 1 MiB reply before it has gone through.
    raw = connect_from(MONITORING, proxy.addr)
    raw.sendall(b"get alliance/fleet/big\r\nset alliance/fleet/big 0 0 1\r\nZ\r\n"
                b"get alliance/fleet/big\r\n")
    reply = b"VALUE alliance/fleet/big 0 %d\r\n%s\r\nEND\r\n" % (MIB, value)
    assert read_exactly(raw, 2 * len(reply) + len(DENIED)) == reply + DENIED + reply


def test_a_data_block_over_the_limit_closes_the_connection(proxy, memcached):
    droid = connect_from(MAINTENANCE, proxy.addr)
    try:
        droid.sendall(b"set alliance/fleet/huge 0 0 %d\r\n" % (MIB + 1) + b"x" * (MIB + 1) + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the proxy may close before it has read everything
    expect_closed(droid)
    assert memcached.get(FLEET + "huge") is None
    proxy.wait_for_entry(lambda e: e["entry_type"] == "Denied"
                         and e["generic_l7"]["fields"].get("status", "").startswith("Error"),
                         "the closed connection's entry")


def test_the_value_limit_is_configurable(start_proxy, memcached):
    proxy = start_proxy("protocols: {memcache: {maxValueBytes: 16}}\n")
    droid = connect_from(MAINTENANCE, proxy.addr)
    droid.sendall(b"set alliance/fleet/small 0 0 16\r\n0123456789abcdef\r\n")
    assert read_get_reply(droid) == b"STORED\r\n"
    droid.sendall(b"set alliance/fleet/small 0 0 17\r\n0123456789abcdefg\r\n")
    expect_closed(droid)
    assert memcached.get(FLEET + "small") == b"0123456789abcdef"


def test_a_stranger_is_refused_at_connect(proxy, memcached):
    stranger = connect_from(STRANGER, proxy.addr)
    try:
        stranger.sendall(b"get alliance/fleet/a\r\n")
    except ConnectionResetError:
        pass
    expect_closed(stranger)
    [refused] = proxy.entries(1)
    assert refused["entry_type"] == "Denied"
    assert refused["source_labels"] == [
        "app=empire",
        "k8s:io.kubernetes.pod.namespace=default",
    ]


def test_an_endpoint_no_policy_selects_passes_memcached_unparsed(proxy, memcached):
    anyone = connect_from(STRANGER, proxy.unguarded_addr)
    anyone.sendall(b"set empire/plans 0 0 5\r\nvader\r\nget empire/plans\r\n")
    assert read_get_reply(anyone) == b"STORED\r\n"
    assert read_get_reply(anyone) == b"VALUE empire/plans 0 5\r\nvader\r\nEND\r\n"
    assert proxy.entries(0) == []


def test_exact_and_regex_key_rules(start_proxy, memcached):
    proxy = start_proxy(policy=monitoring_policy("exact-and-regex", memcached.port, [
        '{command: get, keyExact: alliance/fleet/x-wing}',
        '{command: set, keyRegex: "alliance/fleet/[a-z]+-wing"}',
    ]))
    monitor = connect_from(MONITORING, proxy.addr)
    for request, reply in [
        (b"get alliance/fleet/x-wing\r\n", b"END\r\n"),
        (b"get alliance/fleet/x-wings\r\n", DENIED),
        (b"set alliance/fleet/y-wing 0 0 1\r\nY\r\n", b"STORED\r\n"),
        (b"set alliance/fleet/y-wing2 0 0 1\r\nY\r\n", DENIED),
        (b"set rogue/alliance/fleet/y-wing 0 0 1\r\nY\r\n", DENIED),
        (b"add alliance/fleet/z-wing 0 0 1\r\nZ\r\n", DENIED),
        (b"get alliance/fleet/y-wing\r\n", DENIED),
    ]:
        monitor.sendall(request)
        assert read_get_reply(monitor) == reply, request
    assert memcached.get(FLEET + "y-wing") == b"Y"
    assert memcached.get(FLEET + "z-wing") is None


def test_rules_for_commands_without_keys_and_multi_line_replies(start_proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    proxy = start_proxy(policy=monitoring_policy("monitoring-with-stats", memcached.port, [
        '{command: stats}',
        '{command: version}',
        '{command: get, keyPrefix: alliance/fleet/}',
    ]))
    monitor = connect_from(MONITORING, proxy.addr)
    monitor.sendall(b"stats\r\nstats slabs\r\nset alliance/fleet/a 0 0 1\r\nZ\r\nversion\r\n"
                    b"flush_all\r\nget alliance/fleet/a\r\n")
    for _ in ("stats", "stats slabs"):
        line = read_line(monitor)
        while line.startswith(b"STAT "):
            line = read_line(monitor)
        assert line == b"END\r\n"
    assert read_get_reply(monitor) == DENIED
    assert read_get_reply(monitor).startswith(b"VERSION ")
    assert read_get_reply(monitor) == DENIED
    assert read_get_reply(monitor) == b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n"
    assert proxy.summary(6) == [
        ("Request", "stats", ""), ("Request", "stats", ""), ("Denied", "set", FLEET + "a"),
        ("Request", "version", ""), ("Denied", "flush_all", ""), ("Request", "get", FLEET + "a")]


def test_a_key_rule_without_a_command_is_rejected_at_start(tmp_path, memcached):
    config = write_config(tmp_path, memcached.port, f"""\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: keys-only}}
spec:
  endpointSelector: {{matchLabels: {{app: memcached}}}}
  ingress:
    - toPorts:
        - ports: [{{port: "{memcached.port}"}}]
          rules: {{l7proto: memcache, l7: [{{keyPrefix: alliance/}}]}}
""")
    run = subprocess.run([str(axoneme_bin()), "run", "--config", str(config)],
                         capture_output=True, text=True, timeout=DEADLINE)
    assert run.returncode != 0
    assert 'policy "keys-only"' in run.stderr, run.stderr
    assert "l7[0]" in run.stderr, run.stderr


def test_quit_closes_the_connection_of_a_client_allowed_nothing(start_proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    proxy = start_proxy(policy=allows_nothing_policy(memcached.port))
    monitor = connect_from(MONITORING, proxy.addr)
    # The denial owed before the quit is delivered, then memcached closes; what follows the quit
    # is never read.
    monitor.sendall(b"get alliance/fleet/a\r\nquit\r\nflush_all\r\n")
    assert read_get_reply(monitor) == DENIED
    assert monitor.recv(1) == b"", "closed, with nothing after the denial"
    assert memcached.get(FLEET + "a") == b"A"
    assert proxy.summary(1) == [("Denied", "get", FLEET + "a")]
