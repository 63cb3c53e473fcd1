"""The meta protocol through the proxy under the Rebels policy: meta-memcache as applications use
it, and raw sockets for the exact bytes of opaque, quiet and base64-key requests."""

import base64

import pytest
from meta_memcache import MemcacheServerError

from conftest import (DENIED, JEDI, MAINTENANCE, MIB, MONITORING, POLICY_NAME, STRANGER,
                      connect_from, expect_closed, meta_client, read_exactly, read_text_reply)

FLEET = "alliance/fleet/"
# A value that looks like the end of one meta reply and the start of others.
TRICKY = b"EN\r\nVA 2 O1\r\nhi\r\nMN\r\n\r\nEND\r\n"


def exchange(sock, request: bytes, replies: int) -> list[bytes]:
    """Sends `request` (one or more pipelined commands) and reads `replies` replies."""
    sock.sendall(request)
    return [read_text_reply(sock) for _ in range(replies)]


def test_maintenance_may_write_and_read_the_fleet_keys(proxy, memcached):
    droid = meta_client(proxy, MAINTENANCE)
    assert droid.set(FLEET + "x-wing", b"red five", ttl=0) is True
    assert droid.get(FLEET + "x-wing") == b"red five"
    assert droid.set(FLEET + "count", b"40", ttl=0) is True
    assert droid.delta(FLEET + "count", 2) is True
    assert droid.get(FLEET + "count") == b"42"
    assert droid.delete(FLEET + "count") is True
    values = droid.multi_get([FLEET + "x-wing", FLEET + "count"])
    assert {key.key: value for key, value in values.items()} == {
        FLEET + "x-wing": b"red five", FLEET + "count": None}
    assert memcached.get(FLEET + "x-wing") == b"red five"
    assert memcached.get(FLEET + "count") is None
    entries = proxy.entries(8)
    assert {e["policy_name"] for e in entries} == {POLICY_NAME}
    assert proxy.summary(8) == [
        ("Request", "set", FLEET + "x-wing"), ("Request", "get", FLEET + "x-wing"),
        ("Request", "set", FLEET + "count"), ("Request", "incr", FLEET + "count"),
        ("Request", "get", FLEET + "count"), ("Request", "delete", FLEET + "count"), ("Request", "get", FLEET + "x-wing"),
        ("Request", "get", FLEET + "count")]


def test_denials_raise_and_change_nothing(proxy, memcached):
    memcached.put(FLEET + "falcon", b"original")
    memcached.put("empire/plans", b"P")
    monitor = meta_client(proxy, MONITORING)
    assert monitor.get(FLEET + "falcon") == b"original"
    for attempt in (lambda: monitor.set(FLEET + "falcon", b"scrap", ttl=0),
                    lambda: monitor.delete(FLEET + "falcon"),
                    lambda: monitor.delta(FLEET + "falcon", 1),
                    lambda: monitor.get("empire/plans"),
                    lambda: monitor.multi_get([FLEET + "falcon", "empire/plans"])):
        with pytest.raises(MemcacheServerError):
            attempt()
    # The library drops a connection after an error and opens another, from the same address.
    assert monitor.get(FLEET + "falcon") == b"original"
    assert memcached.get(FLEET + "falcon") == b"original"
    assert proxy.summary(8) == [
        ("Request", "get", FLEET + "falcon"), ("Denied", "set", FLEET + "falcon"),
        ("Denied", "delete", FLEET + "falcon"), ("Denied", "incr", FLEET + "falcon"),
        ("Denied", "get", "empire/plans"),
        ("Request", "get", FLEET + "falcon"), ("Denied", "get", "empire/plans"),
        ("Request", "get", FLEET + "falcon")]


def test_a_denied_no_reply_set_is_dropped_and_the_connection_stays_in_step(proxy, memcached):
    memcached.put(FLEET + "falcon", b"original")
    monitor = meta_client(proxy, MONITORING)
    # Sent as a quiet ms followed by mn; the library reads up to MN before its next command.
    assert monitor.set(FLEET + "falcon", b"overwritten", ttl=0, no_reply=True) is True
    assert monitor.get(FLEET + "falcon") == b"original"
    assert monitor.get(FLEET + "falcon") == b"original"
    assert memcached.get(FLEET + "falcon") == b"original"
    assert proxy.keyed_summary(3) == [("Denied", "set", FLEET + "falcon")] + [
        ("Request", "get", FLEET + "falcon")] * 2


def test_touch_is_gat_and_needs_its_own_rule(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    with pytest.raises(MemcacheServerError):
        meta_client(proxy, MAINTENANCE).touch(FLEET + "a", 60)
    assert meta_client(proxy, JEDI).touch(FLEET + "a", 60) is True
    assert proxy.summary(2) == [("Denied", "gat", FLEET + "a"), ("Request", "gat", FLEET + "a")]


def test_values_that_look_like_protocol_and_one_mebibyte_pass_intact(proxy, memcached):
    big = (b"\r\nVA 1\r\nEN\r\n" + bytes(range(256)) * 3) * (MIB // 779 + 1)
    big = big[:MIB]
    droid = meta_client(proxy, MAINTENANCE)
    assert droid.set(FLEET + "tricky", TRICKY, ttl=0) is True
    assert droid.set(FLEET + "big", big, ttl=0) is True
    assert memcached.get(FLEET + "big") == big
    assert droid.get(FLEET + "tricky") == TRICKY
    assert droid.get(FLEET + "big") == big
    values = meta_client(proxy, MONITORING).multi_get([FLEET + "big", FLEET + "tricky"])
    assert {key.key: value for key, value in values.items()} == {
        FLEET + "big": big, FLEET + "tricky": TRICKY}


def test_opaque_requests_get_their_denials_in_order(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    pipeline = (b"mg alliance/fleet/a v O123\r\n"
                b"ms alliance/fleet/a 1 O77\r\nZ\r\n"
                b"mg empire/plans v O5\r\n"
                b"mg alliance/fleet/a s v O9\r\n"
                b"mn\r\n")
    for chunk_size in (len(pipeline), 1):
        monitor = connect_from(MONITORING, proxy.addr)
        for start in range(0, len(pipeline), chunk_size):
            monitor.sendall(pipeline[start:start + chunk_size])
        assert [read_text_reply(monitor) for _ in range(5)] == [
            b"VA 1 O123\r\nA\r\n", DENIED, DENIED, b"VA 1 s1 O9\r\nA\r\n", b"MN\r\n"
        ], f"sent in chunks of {chunk_size}"
    assert memcached.get(FLEET + "a") == b"A"


def test_a_denied_mebibyte_data_block_is_dropped_whole(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    big = b"ms alliance/fleet/a 1 MS\r\nZ\r\n" * (MIB // 30)
    monitor = connect_from(MONITORING, proxy.addr)
    assert exchange(monitor, b"ms alliance/fleet/a %d\r\n%s\r\nmg alliance/fleet/a v\r\n"
                    % (len(big), big), 2) == [DENIED, b"VA 1\r\nA\r\n"]
    assert memcached.get(FLEET + "a") == b"A"


def test_quiet_requests_and_noop(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    monitor = connect_from(MONITORING, proxy.addr)
    # A quiet miss says nothing; a denial is an error, which quiet mode still reports.
    assert exchange(monitor,
                    b"mg alliance/fleet/missing v q\r\n"
                    b"mg empire/plans v q\r\n"
                    b"mg alliance/fleet/a v q k\r\n"
                    b"ms alliance/fleet/a 1 q\r\nZ\r\n"
                    b"md alliance/fleet/a q\r\n"
                    b"mn\r\n", 5) == [
        DENIED, b"VA 1 kalliance/fleet/a\r\nA\r\n", DENIED, DENIED, b"MN\r\n"]
    droid = connect_from(MAINTENANCE, proxy.addr)
    assert exchange(droid, b"ms alliance/fleet/q 1 q\r\nQ\r\nmd alliance/fleet/a q\r\nmn\r\n",
                    1) == [b"MN\r\n"]
    assert memcached.get(FLEET + "q") == b"Q"
    assert memcached.get(FLEET + "a") is None
    assert proxy.keyed_summary(7) == [
        ("Request", "get", FLEET + "missing"), ("Denied", "get", "empire/plans"),
        ("Request", "get", FLEET + "a"), ("Denied", "set", FLEET + "a"),
        ("Denied", "delete", FLEET + "a"), ("Request", "set", FLEET + "q"),
        ("Request", "delete", FLEET + "a")]


def test_a_denial_after_quiet_requests_comes_after_their_replies(proxy, memcached):
    droid = connect_from(MAINTENANCE, proxy.addr)
    # The quiet ms says nothing; the quiet ma of a non-numeric value fails, and errors are
    # reported even in quiet mode, so its error comes before the denial.
    assert exchange(droid,
                    b"ms alliance/fleet/q 1 q\r\nQ\r\n"
                    b"ma alliance/fleet/q q\r\n"
                    b"ms empire/plans 1\r\nZ\r\n"
                    b"mg alliance/fleet/q v\r\n"
                    b"mn\r\n"
                    b"mg empire/plans v\r\n", 5) == [
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", DENIED,
        b"VA 1\r\nQ\r\n", b"MN\r\n", DENIED]
    assert exchange(droid, b"mn\r\n", 1) == [b"MN\r\n"], "nothing extra came before this reply"
    assert memcached.get(FLEET + "q") == b"Q"


def test_a_thousand_denials_pipelined_behind_an_allowed_request(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    monitor = connect_from(MONITORING, proxy.addr)
    monitor.sendall(b"mg alliance/fleet/a v\r\n" + b"md empire/plans\r\n" * 1000)
    expected = b"VA 1\r\nA\r\n" + DENIED * 1000
    assert read_exactly(monitor, len(expected)) == expected


def test_base64_keys_are_checked_decoded(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    memcached.put("empire/plans", b"P")
    monitor = connect_from(MONITORING, proxy.addr)
    fleet_key = base64.b64encode(b"alliance/fleet/a")
    empire_key = base64.b64encode(b"empire/plans")
    assert exchange(monitor, b"mg %s b v\r\nmg %s b v\r\n" % (fleet_key, empire_key), 2) == [
        b"VA 1\r\nA\r\n", DENIED]
    assert proxy.summary(2) == [("Request", "get", FLEET + "a"), ("Denied", "get", "empire/plans")]


def test_meta_commands_map_to_cilium_command_names(proxy, memcached):
    droid = connect_from(MAINTENANCE, proxy.addr)
    assert exchange(droid,
                    b"ms alliance/fleet/c 1 MA\r\nx\r\n"
                    b"ms alliance/fleet/c 1 ME\r\n1\r\n"
                    b"ma alliance/fleet/c\r\n"
                    b"ma alliance/fleet/c MD\r\n"
                    b"ms alliance/fleet/c 1 C999\r\nx\r\n"
                    b"mg alliance/fleet/c v T30\r\n"
                    b"ms alliance/fleet/c 1 MP\r\ny\r\n"
                    b"ms alliance/fleet/c 1 MR\r\n7\r\n"
                    b"md alliance/fleet/c\r\n"
                    b"mn\r\n", 10) == [
        b"NS\r\n", b"HD\r\n", b"HD\r\n", b"HD\r\n", b"EX\r\n", DENIED, b"HD\r\n", b"HD\r\n",
        b"HD\r\n", b"MN\r\n"]
    assert [(t, c) for t, c, _ in proxy.keyed_summary(9)] == [
        ("Request", "append"), ("Request", "add"), ("Request", "incr"), ("Request", "decr"),
        ("Request", "cas"), ("Denied", "gat"), ("Request", "prepend"), ("Request", "replace"),
        ("Request", "delete")]


def test_a_monitor_may_not_write_with_any_meta_command(proxy, memcached):
    memcached.put(FLEET + "c", b"1")
    monitor = connect_from(MONITORING, proxy.addr)
    assert exchange(monitor,
                    b"ms alliance/fleet/c 1 MA\r\nx\r\n"
                    b"ma alliance/fleet/c\r\n"
                    b"md alliance/fleet/c\r\n"
                    b"mg alliance/fleet/c v T30\r\n"
                    b"mg alliance/fleet/c v\r\n"
                    b"me empire/plans\r\n", 6) == [
        DENIED, DENIED, DENIED, DENIED, b"VA 1\r\n1\r\n", DENIED]
    monitor.sendall(b"me alliance/fleet/c\r\n")
    assert read_text_reply(monitor).startswith(b"ME alliance/fleet/c exp=-1 ")
    assert memcached.get(FLEET + "c") == b"1"


def test_noop_is_always_allowed(proxy, memcached):
    for source in (MAINTENANCE, MONITORING, JEDI):
        sock = connect_from(source, proxy.addr)
        assert exchange(sock, b"mn\r\n", 1) == [b"MN\r\n"], source


def test_a_stranger_cannot_even_send_noop(proxy, memcached):
    stranger = connect_from(STRANGER, proxy.addr)
    try:
        stranger.sendall(b"mn\r\n")
    except ConnectionResetError:
        pass
    expect_closed(stranger)


def test_a_meta_data_block_over_the_limit_closes_the_connection(start_proxy, memcached):
    proxy = start_proxy("protocols: {memcache: {maxValueBytes: 16}}\n")
    droid = connect_from(MAINTENANCE, proxy.addr)
    assert exchange(droid, b"ms alliance/fleet/s 16\r\n0123456789abcdef\r\n", 1) == [b"HD\r\n"]
    droid.sendall(b"ms alliance/fleet/s 17\r\n0123456789abcdefg\r\n")
    expect_closed(droid)
    assert memcached.get(FLEET + "s") == b"0123456789abcdef"


def test_me_reads_its_key_as_base64_when_b_is_followed_by_more(proxy, memcached):
    # memcached decodes `me`'s key when the token after it is `b`, even with more after it (or
    # a trailing space): the key judged must be the decoded one. "alliance/fleet/A" is itself
    # base64 for 12 bytes outside the fleet's keys.
    hidden = base64.b64decode("alliance/fleet/A")
    assert not hidden.startswith(FLEET.encode())
    assert memcached.command(b"ms alliance/fleet/A 1 b\r\nX\r\n") == b"HD\r\n"
    assert memcached.command(b"me alliance/fleet/A b x\r\n").startswith(b"ME ")
    monitor = connect_from(MONITORING, proxy.addr)
    for request in (b"me alliance/fleet/A b x\r\n", b"me alliance/fleet/A b \r\n",
                    b"me alliance/fleet/A b\r\n"):
        assert exchange(monitor, request, 1) == [DENIED], request
    entries = proxy.entries(3)
    assert [e["entry_type"] for e in entries] == ["Denied"] * 3
    assert all(e["generic_l7"]["fields"]["keys"] != "alliance/fleet/A" for e in entries)


def test_a_get_that_creates_the_missing_item_needs_add_too(proxy, memcached):
    # mg (and ms in append/prepend mode) with N creates a missing item: a monitor allowed only
    # get may not create keys with it.
    monitor = connect_from(MONITORING, proxy.addr)
    assert exchange(monitor, b"mg alliance/fleet/vivid N30 v\r\n", 1) == [DENIED]
    assert exchange(monitor, b"mg alliance/fleet/vivid T30 N30\r\n", 1) == [DENIED]
    assert memcached.command(b"mg alliance/fleet/vivid v\r\n") == b"EN\r\n"
    assert exchange(monitor, b"mg alliance/fleet/vivid v\r\n", 1) == [b"EN\r\n"]
    droid = connect_from(MAINTENANCE, proxy.addr)
    assert exchange(droid, b"ma alliance/fleet/counter N0 J5 v\r\n", 1) == [b"VA 1\r\n5\r\n"]
    assert exchange(droid, b"mg alliance/fleet/vivid N30 v\r\n", 1) == [b"VA 0 W\r\n\r\n"]
    assert memcached.get(FLEET + "counter") == b"5"
    assert memcached.get(FLEET + "vivid") == b""
