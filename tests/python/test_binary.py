"""The binary protocol through the proxy under the Rebels policy: python-binary-memcached as
applications use it, and raw sockets for the exact bytes of denials, quiet opcodes and NOOP."""

import struct

import pytest
from bmemcached.exceptions import MemcachedException

from conftest import (BINARY_HEADER, JEDI, MAINTENANCE, MIB, MONITORING, POLICY_NAME, STRANGER,
                      allows_nothing_policy, binary_client, binary_request, connect_from,
                      expect_closed, monitoring_policy, read_exactly, read_binary_response)

FLEET = "alliance/fleet/"
GET, SET, DELETE, INCREMENT = 0x00, 0x01, 0x04, 0x05
QUIT, FLUSH, GETQ, NOOP, VERSION, GETK, STAT = 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x10
SETQ, QUITQ = 0x11, 0x17
TOUCH, GAT, GATQ = 0x1C, 0x1D, 0x1E
ACCESS_DENIED = 0x0008
# A value holding request and response magic bytes and text-protocol terminators.
TRICKY = bytes([0x80, 0x81, 0x00, 0x01]) + b"\r\nEND\r\n" + BINARY_HEADER.pack(
    0x81, GET, 0, 0, 0, 0, 0, 0, 0)


def storage_extras(flags: int = 0, expiry: int = 0) -> bytes:
    return struct.pack("!LL", flags, expiry)


def denial(opcode: int, opaque: int) -> bytes:
    """The exact bytes the proxy answers a denied binary request with."""
    return BINARY_HEADER.pack(0x81, opcode, 0, 0, 0, ACCESS_DENIED, 13, opaque, 0) + b"access denied"


def test_maintenance_may_write_and_read_the_fleet_keys(proxy, memcached):
    droid = binary_client(proxy, MAINTENANCE)
    key, counter = FLEET + "x-wing", FLEET + "count"
    assert droid.set(key, b"red five") is True
    assert droid.get(key) == b"red five"
    assert droid.replace(key, b"red leader") is True
    assert droid.add(counter, b"40") is True
    assert droid.incr(counter, 2) == 42
    assert droid.decr(counter, 1) == 41
    assert droid.delete(counter) is True
    assert droid.get_multi([key, counter]) == {key: b"red leader"}
    assert memcached.get(key) == b"red leader"
    assert memcached.get(counter) is None
    entries = proxy.entries(9)
    assert [e["entry_type"] for e in entries] == ["Request"] * 9
    assert {e["policy_name"] for e in entries} == {POLICY_NAME}
    assert [(e["generic_l7"]["fields"]["opcode"], e["generic_l7"]["fields"]["keys"])
            for e in entries] == [
        ("1", key), ("0", key), ("3", key), ("2", counter), ("5", counter), ("6", counter),
        ("4", counter), ("13", key), ("12", counter)]
    assert [e["generic_l7"]["fields"]["command"] for e in entries[:4]] == [
        "set", "get", "replace", "add"]
    assert entries[0]["generic_l7"]["proto"] == "memcache"


def test_denials_raise_status_8_and_change_nothing(proxy, memcached):
    memcached.put(FLEET + "falcon", b"original")
    memcached.put("empire/plans", b"P")
    monitor = binary_client(proxy, MONITORING)
    connection = next(monitor.servers).connection
    for attempt in (lambda: monitor.set(FLEET + "falcon", b"scrap"),
                    lambda: monitor.add(FLEET + "new", b"1"),
                    lambda: monitor.delete(FLEET + "falcon"),
                    lambda: monitor.incr(FLEET + "falcon", 1),
                    lambda: monitor.get("empire/plans"),
                    lambda: monitor.get_multi([FLEET + "falcon", "empire/plans"])):
        with pytest.raises(MemcachedException) as denied:
            attempt()
        assert denied.value.code == ACCESS_DENIED
        assert "access denied" in str(denied.value)
    assert monitor.get(FLEET + "falcon") == b"original"
    assert next(monitor.servers).connection is connection, "denials keep the connection open"
    assert memcached.get(FLEET + "falcon") == b"original"
    assert memcached.get(FLEET + "new") is None
    assert [(t, k) for t, _, k in proxy.summary(8)] == [
        ("Denied", FLEET + "falcon"), ("Denied", FLEET + "new"), ("Denied", FLEET + "falcon"),
        ("Denied", FLEET + "falcon"), ("Denied", "empire/plans"),
        ("Request", FLEET + "falcon"), ("Denied", "empire/plans"), ("Request", FLEET + "falcon")]


def test_a_quiet_multi_set_reports_only_the_denied_keys(proxy, memcached):
    droid = binary_client(proxy, MAINTENANCE)
    failed = droid.set_multi({FLEET + "a": b"A", "empire/plans": b"stolen", FLEET + "b": b"B"})
    assert failed == ["empire/plans"]
    assert memcached.get(FLEET + "a") == b"A"
    assert memcached.get(FLEET + "b") == b"B"
    assert memcached.get("empire/plans") is None
    assert droid.get_multi([FLEET + "a", FLEET + "b"]) == {FLEET + "a": b"A", FLEET + "b": b"B"}


def test_values_with_magic_bytes_and_one_mebibyte_pass_intact(proxy, memcached):
    big = (TRICKY + bytes(range(256))) * (MIB // (len(TRICKY) + 256) + 1)
    big = big[:MIB]
    droid = binary_client(proxy, MAINTENANCE)
    assert droid.set(FLEET + "tricky", TRICKY) is True
    assert droid.set(FLEET + "big", big) is True
    assert memcached.get(FLEET + "big") == big
    assert memcached.get(FLEET + "tricky") == TRICKY
    monitor = binary_client(proxy, MONITORING)
    assert monitor.get(FLEET + "big") == big
    assert monitor.get_multi([FLEET + "tricky", FLEET + "big"]) == {
        FLEET + "tricky": TRICKY, FLEET + "big": big}
    with pytest.raises(MemcachedException):
        monitor.set(FLEET + "big", big[::-1])
    assert monitor.get(FLEET + "big") == big
    # Pipelined: the denial waits until the 1 MiB response before it has gone through.
    raw = connect_from(MONITORING, proxy.addr)
    raw.sendall(binary_request(GET, b"alliance/fleet/big", opaque=1)
                + binary_request(SET, b"alliance/fleet/big", storage_extras(), b"Z", opaque=2)
                + binary_request(GET, b"alliance/fleet/big", opaque=3))
    first = read_binary_response(raw)
    assert (first["opaque"], first["status"], first["value"]) == (1, 0, big)
    assert read_exactly(raw, 24 + 13) == denial(SET, 2)
    last = read_binary_response(raw)
    assert (last["opaque"], last["status"], last["value"]) == (3, 0, big)


def test_a_denial_copies_opcode_and_opaque_with_status_8(proxy, memcached):
    monitor = connect_from(MONITORING, proxy.addr)
    monitor.sendall(binary_request(SET, b"alliance/fleet/a", storage_extras(), b"Z",
                                   opaque=0xDEADBEEF, cas=7))
    assert read_exactly(monitor, 24 + 13) == denial(SET, 0xDEADBEEF)
    monitor.sendall(binary_request(GET, b"empire/plans", opaque=1))
    assert read_exactly(monitor, 24 + 13) == denial(GET, 1)
    assert memcached.get(FLEET + "a") is None


def test_pipelined_requests_get_their_replies_and_denials_in_order(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    memcached.put(FLEET + "b", TRICKY)
    pipeline = (binary_request(GET, b"alliance/fleet/a", opaque=1)
                + binary_request(SET, b"alliance/fleet/a", storage_extras(), b"Z", opaque=2)
                + binary_request(DELETE, b"alliance/fleet/b", opaque=3)
                + binary_request(GETK, b"alliance/fleet/b", opaque=4)
                + binary_request(INCREMENT, b"alliance/fleet/a", bytes(20), opaque=5)
                + binary_request(NOOP, opaque=6))
    for chunk_size in (len(pipeline), 1):
        monitor = connect_from(MONITORING, proxy.addr)
        for start in range(0, len(pipeline), chunk_size):
            monitor.sendall(pipeline[start:start + chunk_size])
        replies = [read_binary_response(monitor) for _ in range(6)]
        assert [(r["opcode"], r["opaque"], r["status"]) for r in replies] == [
            (GET, 1, 0), (SET, 2, ACCESS_DENIED), (DELETE, 3, ACCESS_DENIED), (GETK, 4, 0),
            (INCREMENT, 5, ACCESS_DENIED), (NOOP, 6, 0)], f"sent in chunks of {chunk_size}"
        assert replies[0]["value"] == b"A"
        assert (replies[3]["key"], replies[3]["value"]) == (b"alliance/fleet/b", TRICKY)
    assert memcached.get(FLEET + "a") == b"A"
    assert memcached.get(FLEET + "b") == TRICKY


def test_a_thousand_denials_pipelined_behind_an_allowed_request(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    monitor = connect_from(MONITORING, proxy.addr)
    monitor.sendall(binary_request(GET, b"alliance/fleet/a", opaque=0) + b"".join(
        binary_request(DELETE, b"empire/plans", opaque=i) for i in range(1, 1001)))
    hit = read_binary_response(monitor)
    assert (hit["opaque"], hit["status"], hit["value"]) == (0, 0, b"A")
    for opaque in range(1, 1001):
        assert read_exactly(monitor, 24 + 13) == denial(DELETE, opaque)


def test_quiet_opcodes_are_answered_when_denied_and_noop_flushes(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    monitor = connect_from(MONITORING, proxy.addr)
    monitor.sendall(binary_request(GETQ, b"alliance/fleet/missing", opaque=1)
                    + binary_request(GETQ, b"empire/plans", opaque=2)
                    + binary_request(GETQ, b"alliance/fleet/a", opaque=3)
                    + binary_request(SETQ, b"alliance/fleet/a", storage_extras(), b"Z", opaque=4)
                    + binary_request(NOOP, opaque=5))
    assert read_exactly(monitor, 24 + 13) == denial(GETQ, 2)
    hit = read_binary_response(monitor)
    assert (hit["opcode"], hit["opaque"], hit["status"], hit["value"]) == (GETQ, 3, 0, b"A")
    assert read_exactly(monitor, 24 + 13) == denial(SETQ, 4)
    assert read_exactly(monitor, 24) == BINARY_HEADER.pack(0x81, NOOP, 0, 0, 0, 0, 0, 5, 0)
    droid = connect_from(MAINTENANCE, proxy.addr)
    droid.sendall(binary_request(SETQ, b"alliance/fleet/q", storage_extras(), b"Q", opaque=1)
                  + binary_request(NOOP, opaque=2))
    assert read_exactly(droid, 24) == BINARY_HEADER.pack(0x81, NOOP, 0, 0, 0, 0, 0, 2, 0)
    assert memcached.get(FLEET + "q") == b"Q"
    assert memcached.get(FLEET + "a") == b"A"
    assert proxy.keyed_summary(5) == [
        ("Request", "get", FLEET + "missing"), ("Denied", "get", "empire/plans"),
        ("Request", "get", FLEET + "a"), ("Denied", "set", FLEET + "a"),
        ("Request", "set", FLEET + "q")]
    opcodes = [e["generic_l7"]["fields"]["opcode"] for e in proxy.entries(5)
               if e["generic_l7"]["fields"].get("keys")]
    assert opcodes == [str(GETQ)] * 3 + [str(SETQ)] * 2


def test_a_denial_after_quiet_requests_adds_no_reply_of_its_own(proxy, memcached):
    droid = connect_from(MAINTENANCE, proxy.addr)
    droid.sendall(binary_request(SETQ, b"alliance/fleet/q", storage_extras(), b"Q", opaque=1)
                  + binary_request(SET, b"empire/plans", storage_extras(), b"Z", opaque=2)
                  + binary_request(GET, b"alliance/fleet/q", opaque=3)
                  + binary_request(GET, b"empire/plans", opaque=4))
    assert read_exactly(droid, 24 + 13) == denial(SET, 2)
    hit = read_binary_response(droid)
    assert (hit["opcode"], hit["opaque"], hit["status"], hit["value"]) == (GET, 3, 0, b"Q")
    assert read_exactly(droid, 24 + 13) == denial(GET, 4), "nothing extra came before this reply"
    assert memcached.get(FLEET + "q") == b"Q"
    assert memcached.get("empire/plans") is None


def test_touch_is_in_the_write_group_and_gat_needs_its_own_rule(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    expiry = struct.pack("!L", 60)
    for source, statuses in ((MAINTENANCE, [0, ACCESS_DENIED, ACCESS_DENIED]),
                             (MONITORING, [ACCESS_DENIED] * 3), (JEDI, [0, 0, 0])):
        sock = connect_from(source, proxy.addr)
        sock.sendall(binary_request(TOUCH, b"alliance/fleet/a", expiry, opaque=1)
                     + binary_request(GAT, b"alliance/fleet/a", expiry, opaque=2)
                     + binary_request(GATQ, b"alliance/fleet/a", expiry, opaque=3))
        replies = [read_binary_response(sock) for _ in range(3)]
        assert [(r["opcode"], r["opaque"], r["status"]) for r in replies] == [
            (TOUCH, 1, statuses[0]), (GAT, 2, statuses[1]), (GATQ, 3, statuses[2])], source
    assert [(e["entry_type"], e["generic_l7"]["fields"]["command"]) for e in proxy.entries(9)] == [
        ("Request", "touch"), ("Denied", "gat"), ("Denied", "gat"),
        ("Denied", "touch"), ("Denied", "gat"), ("Denied", "gat"),
        ("Request", "touch"), ("Request", "gat"), ("Request", "gat")]


def test_commands_without_keys_need_a_rule_without_keys(proxy, memcached):
    for source, status in ((MAINTENANCE, ACCESS_DENIED), (MONITORING, ACCESS_DENIED), (JEDI, 0)):
        sock = connect_from(source, proxy.addr)
        sock.sendall(binary_request(VERSION, opaque=1) + binary_request(STAT, opaque=2)
                     + binary_request(NOOP, opaque=3))
        version = read_binary_response(sock)
        assert (version["opcode"], version["status"]) == (VERSION, status), source
        stat = read_binary_response(sock)
        while stat["status"] == 0 and stat["key"]:  # STAT streams one response per statistic
            stat = read_binary_response(sock)
        assert (stat["opcode"], stat["status"]) == (STAT, status), source
        noop = read_binary_response(sock)
        assert (noop["opcode"], noop["opaque"], noop["status"]) == (NOOP, 3, 0), source


def test_a_binary_body_over_the_limit_closes_the_connection(start_proxy, memcached):
    proxy = start_proxy("protocols: {memcache: {maxValueBytes: 16}}\n")
    droid = connect_from(MAINTENANCE, proxy.addr)
    droid.sendall(binary_request(SET, b"alliance/fleet/s", storage_extras(), b"0123456789abcdef"))
    assert read_binary_response(droid)["status"] == 0
    droid.sendall(binary_request(SET, b"alliance/fleet/s", storage_extras(), b"0123456789abcdefg"))
    expect_closed(droid)
    assert memcached.get(FLEET + "s") == b"0123456789abcdef"


def test_a_stranger_is_refused_at_connect(proxy, memcached):
    stranger = connect_from(STRANGER, proxy.addr)
    try:
        stranger.sendall(binary_request(NOOP))
    except ConnectionResetError:
        pass
    expect_closed(stranger)


def test_quit_and_quitq_close_the_connection_of_a_client_allowed_nothing(start_proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    proxy = start_proxy(policy=allows_nothing_policy(memcached.port))
    monitor = connect_from(MONITORING, proxy.addr)
    monitor.sendall(binary_request(GET, b"alliance/fleet/a", opaque=1)
                    + binary_request(QUIT, opaque=2) + binary_request(FLUSH, opaque=3))
    assert read_exactly(monitor, 24 + 13) == denial(GET, 1)
    reply = read_binary_response(monitor)
    assert (reply["opcode"], reply["opaque"], reply["status"]) == (QUIT, 2, 0)
    assert monitor.recv(1) == b"", "closed after QUIT's own reply"
    quiet = connect_from(MONITORING, proxy.addr)
    quiet.sendall(binary_request(QUITQ, opaque=4) + binary_request(FLUSH, opaque=5))
    assert quiet.recv(1) == b"", "QUITQ: closed without a reply"
    assert memcached.get(FLEET + "a") == b"A"
    assert proxy.summary(1) == [("Denied", "get", FLEET + "a")]


GATK, GATKQ, VERBOSITY = 0x23, 0x24, 0x1B


def closes(sock) -> bool:
    """Whether the peer closes the connection within the deadline."""
    try:
        expect_closed(sock)
    except TimeoutError:
        return False
    return True


def admin_policy(memcached_port: int) -> str:
    """fleet-monitoring may ask for stats, set verbosity, and touch, gat and set fleet keys."""
    return monitoring_policy("monitoring-admin", memcached_port, [
        "{command: stats}",
        "{command: verbosity}",
        "{command: touch, keyPrefix: alliance/fleet/}",
        "{command: gat, keyPrefix: alliance/fleet/}",
        "{command: set, keyPrefix: alliance/fleet/}",
    ])


@pytest.mark.parametrize("opcode", [STAT, TOUCH, GAT, GATQ, GATK, GATKQ])
def test_a_request_hidden_after_the_key_of_stat_touch_or_gat_never_runs(start_proxy, memcached,
                                                                          opcode):
    # memcached reads STAT, TOUCH and the GATs only up to the end of their key and runs what
    # follows as the next request: a body longer than that closes the connection.
    proxy = start_proxy(policy=admin_policy(memcached.port))
    memcached.put("empire/plans", b"death star")
    memcached.put(FLEET + "x-wing", b"red five")
    hidden = binary_request(DELETE, b"empire/plans", opaque=7)
    extras = b"" if opcode == STAT else struct.pack("!L", 0)
    key = b"" if opcode == STAT else b"alliance/fleet/x-wing"
    raw = connect_from(MONITORING, proxy.addr)
    raw.sendall(binary_request(opcode, key, extras, hidden, opaque=1)
                + binary_request(NOOP, opaque=9))
    closed = closes(raw)
    assert memcached.get("empire/plans") == b"death star", "the hidden DELETE ran"
    assert closed


def test_a_request_hidden_behind_an_unimplemented_opcode_never_runs(start_proxy, memcached):
    # memcached answers an opcode it does not implement (here VERBOSITY) "unknown command" and
    # skips its body counted from the end of its extras and key, so it would skip into the
    # next request: an allowed SET whose value holds a DELETE.
    proxy = start_proxy(policy=admin_policy(memcached.port))
    memcached.put("empire/plans", b"death star")
    hidden = binary_request(DELETE, b"empire/plans", opaque=7)
    key = b"alliance/fleet/carrier"
    carrier = binary_request(SET, key, storage_extras(), hidden, opaque=2)
    skipped = len(carrier) - len(hidden)
    raw = connect_from(MONITORING, proxy.addr)
    raw.sendall(binary_request(VERBOSITY, extras=bytes(skipped), opaque=1) + carrier
                + binary_request(NOOP, opaque=9))
    closed = closes(raw)
    assert memcached.get("empire/plans") == b"death star", "the hidden DELETE ran"
    assert closed
    # Without extras or key, memcached skips exactly the body: the request passes.
    raw = connect_from(MONITORING, proxy.addr)
    raw.sendall(binary_request(VERBOSITY, value=b"1234", opaque=1)
                + binary_request(NOOP, opaque=9))
    assert (read_binary_response(raw)["opaque"], read_binary_response(raw)["opaque"]) == (1, 9)


def replies_until_noop_or_close(sock, noop_opaque: int) -> list[int] | None:
    """The opaques of the responses up to the NOOP response with `noop_opaque` (or up to the
    deadline, when that NOOP is never answered); None if the connection closes first."""
    opaques = []
    while True:
        try:
            response = read_binary_response(sock)
        except ConnectionError:
            return None
        except TimeoutError:
            return opaques
        opaques.append(response["opaque"])
        if response["opcode"] == NOOP and response["opaque"] == noop_opaque:
            return opaques


@pytest.mark.parametrize("extras_len,key", [(0, b""), (0, b"abc"), (4, b"abc"), (8, b"abc"),
                                            (20, b"abc")])
def test_memcached_reads_every_forwarded_packet_as_framed(proxy, memcached, extras_len, key):
    # Every opcode, allowed (a Jedi may do anything): a request the proxy forwards is read by
    # memcached as exactly its header and body, or memcached closes the connection; a NOOP
    # hidden in its value never runs.
    hidden = binary_request(NOOP, opaque=7)
    for opcode in range(256):
        raw = connect_from(JEDI, proxy.addr)
        raw.sendall(binary_request(opcode, key, bytes(extras_len), hidden, opaque=1)
                    + binary_request(NOOP, opaque=9))
        opaques = replies_until_noop_or_close(raw, 9)
        raw.close()
        assert opaques is None or (opaques[-1:] == [9] and 7 not in opaques), (
            f"opcode {opcode:#x}: memcached answered {opaques}")
