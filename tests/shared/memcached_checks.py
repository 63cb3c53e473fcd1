"""What the memcached end-to-end tests share, whichever proxy they run against (the standalone
agent in tests/python, Envoy with Axoneme's filter in tests/envoy): the example's identities and
policy, a real memcached with its fixture, raw-socket helpers, reading the access log, and the
checks both proxies must pass. Each suite starts its own proxy; nothing here starts one."""

import json
import re
import shutil
import signal
import socket
import struct
from pathlib import Path

import pytest

from bench.procs import DEADLINE, Process, free_port, memcached_command, wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "memcached"

# Source addresses of the identities; the example's configuration gives each its labels.
MAINTENANCE = "127.0.0.11"  # function: fleet-maintenance: writeGroup and get on alliance/fleet/*
MONITORING = "127.0.0.12"  # function: fleet-monitoring: get on alliance/fleet/*
JEDI = "127.0.0.13"  # role: jedi: everything
STRANGER = "127.0.0.66"  # app: empire: no policy lets it reach memcached
POLICY_NAME = "secure-fleet"

DENIED = b"CLIENT_ERROR access denied\r\n"
MIB = 1 << 20
FLEET = "alliance/fleet/"
# A value that looks like the end of a get reply and the start of another.
TRICKY = b"END\r\nVALUE alliance/fleet/spoof 0 3\r\nEND\r\n\r\nEND\r\n"

BINARY_HEADER = struct.Struct("!BBHBBHLLQ")


def big_value() -> bytes:
    """Exactly 1 MiB, with protocol terminators and every byte value inside."""
    chunk = b"\r\nEND\r\n" + bytes(range(256))
    return (chunk * (MIB // len(chunk) + 1))[:MIB]


def connect_from(source: str, addr: tuple[str, int]) -> socket.socket:
    """A TCP connection to `addr` from `source`, so the proxy sees that identity."""
    sock = socket.socket()
    sock.settimeout(DEADLINE)
    sock.bind((source, 0))
    sock.connect(addr)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes: {bytes(data)!r}")
        data += chunk
    return bytes(data)


def read_line(sock: socket.socket) -> bytes:
    """Reads one CRLF-terminated line, byte by byte so nothing after it is consumed."""
    line = bytearray()
    while not line.endswith(b"\r\n"):
        line += read_exactly(sock, 1)
    return bytes(line)


def read_text_reply(sock: socket.socket) -> bytes:
    """Reads one reply line of the text or meta protocol, with its data block for VALUE and VA."""
    line = read_line(sock)
    words = line.split()
    if words[0] == b"VALUE":
        return line + read_exactly(sock, int(words[3]) + 2)
    if words[0] == b"VA":
        return line + read_exactly(sock, int(words[1]) + 2)
    return line


def read_get_reply(sock: socket.socket) -> bytes:
    """Reads the reply to a text get: VALUE blocks through END, or a single other line."""
    reply = bytearray()
    while True:
        part = read_text_reply(sock)
        reply += part
        if not part.startswith(b"VALUE"):
            return bytes(reply)


def expect_closed(sock: socket.socket) -> None:
    """Asserts that the peer closes the connection (EOF or reset) within the deadline."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def binary_request(opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"",
                   opaque: int = 0, cas: int = 0) -> bytes:
    body = extras + key + value
    header = BINARY_HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, len(body), opaque, cas)
    return header + body


def read_binary_response(sock: socket.socket) -> dict:
    """One binary response: its header's fields, its whole `body` and the body's parts."""
    magic, opcode, keylen, extlen, datatype, status, bodylen, opaque, cas = BINARY_HEADER.unpack(
        read_exactly(sock, BINARY_HEADER.size))
    body = read_exactly(sock, bodylen)
    return {
        "magic": magic, "opcode": opcode, "datatype": datatype, "status": status,
        "opaque": opaque, "cas": cas, "body": body, "extras": body[:extlen],
        "key": body[extlen:extlen + keylen], "value": body[extlen + keylen:],
    }


class Memcached:
    """A real memcached on a free loopback port; `command` talks to it directly, past the proxy."""

    def __init__(self, log_dir: Path):
        binary = shutil.which("memcached")
        if binary is None:
            pytest.fail("memcached is not installed (scripts/test.sh installs it)")
        self.port = free_port()
        # -I 2m: items up to 2 MiB, so a 1 MiB value plus its key and header fits one item.
        self.process = Process(memcached_command(binary, self.port, "-I", "2m"),
                               log_dir / "memcached.log")
        self.process.ready(self._answers, f"memcached on port {self.port}")

    def _answers(self) -> bool:
        try:
            return self.command(b"version\r\n").startswith(b"VERSION ")
        except OSError:
            return False

    def command(self, request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE) as sock:
            sock.sendall(request)
            return read_get_reply(sock)

    def get(self, key: str) -> bytes | None:
        """The value stored under `key`, read directly from memcached."""
        reply = self.command(b"get " + key.encode() + b"\r\n")
        if reply == b"END\r\n":
            return None
        header, rest = reply.split(b"\r\n", 1)
        return rest[: int(header.split()[3])]

    def put(self, key: str, value: bytes) -> None:
        """Stores `value` directly in memcached."""
        reply = self.command(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value))
        assert reply == b"STORED\r\n", reply

    def stop(self) -> None:
        # It holds nothing worth a clean shutdown, which would take it most of a second.
        self.process.stop(signal.SIGKILL)


@pytest.fixture
def memcached(tmp_path):
    server = Memcached(tmp_path)
    yield server
    server.stop()


def example_policy(memcached_port: int) -> str:
    """The example's policy, guarding the port the test's memcached listens on."""
    policy = (EXAMPLE / "policy.yaml").read_text()
    assert 'port: "11211"' in policy, "the example policy guards memcached's port 11211"
    return policy.replace('port: "11211"', f'port: "{memcached_port}"')


class AccessLogReader:
    """Reading a proxy's access log (the file `self.access_log`), for the classes that run one."""

    access_log: Path

    def entries(self, n: int) -> list[dict]:
        """The access log once it holds at least `n` entries (all of them, which may be more)."""
        def read() -> list[dict] | None:
            if not self.access_log.exists():
                return None
            # Only lines already ended by a newline: the last one may still be being written.
            complete = self.access_log.read_text().split("\n")[:-1]
            entries = [json.loads(line) for line in complete]
            return entries if len(entries) >= n else None

        if n == 0:
            return read() or []
        return wait_until(read, f"{n} access log entries")

    def summary(self, n: int) -> list[tuple]:
        """(entry_type, command, keys) of every entry, once there are at least `n`."""
        return [
            (e["entry_type"], e["generic_l7"]["fields"].get("command"),
             e["generic_l7"]["fields"].get("keys", ""))
            for e in self.entries(n)
        ]


# The checks every proxy must pass. `proxy` is the running proxy under test: its `addr` guards
# `memcached` under the example's policy and it reads its access log (AccessLogReader).

def check_pipelined_requests_get_their_replies_and_denials_in_order(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    memcached.put(FLEET + "b", TRICKY)
    pipeline = (b"get alliance/fleet/a\r\n"
                b"set alliance/fleet/a 0 0 1\r\nZ\r\n"
                b"get alliance/fleet/b\r\n"
                b"get alliance/fleet/a empire/plans\r\n"
                b"set alliance/fleet/a 0 0 1 noreply\r\nZ\r\n"
                b"delete alliance/fleet/b\r\n"
                b"gets alliance/fleet/a alliance/fleet/b\r\n")
    expected = (b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n"
                + DENIED
                + b"VALUE alliance/fleet/b 0 %d\r\n%s\r\nEND\r\n" % (len(TRICKY), TRICKY)
                + DENIED
                + DENIED)
    for chunk_size in (len(pipeline), 1):
        monitor = connect_from(MONITORING, proxy.addr)
        for start in range(0, len(pipeline), chunk_size):
            monitor.sendall(pipeline[start:start + chunk_size])
        assert read_exactly(monitor, len(expected)) == expected, f"sent in chunks of {chunk_size}"
        gets_reply = read_get_reply(monitor)
        assert re.fullmatch(b"VALUE alliance/fleet/a 0 1 [0-9]+\r\nA\r\n"
                            b"VALUE alliance/fleet/b 0 %d [0-9]+\r\n" % len(TRICKY)
                            + re.escape(TRICKY) + b"\r\nEND\r\n", gets_reply), gets_reply
    assert memcached.get(FLEET + "a") == b"A"
    assert memcached.get(FLEET + "b") == TRICKY
    assert proxy.summary(14)[:7] == [
        ("Request", "get", FLEET + "a"),
        ("Denied", "set", FLEET + "a"),
        ("Request", "get", FLEET + "b"),
        ("Denied", "get", "alliance/fleet/a, empire/plans"),
        ("Denied", "set", FLEET + "a"),
        ("Denied", "delete", FLEET + "b"),
        ("Request", "get", "alliance/fleet/a, alliance/fleet/b"),
    ]


def check_a_thousand_denials_pipelined_behind_an_allowed_request(proxy, memcached):
    memcached.put(FLEET + "a", b"A")
    monitor = connect_from(MONITORING, proxy.addr)
    monitor.sendall(b"get alliance/fleet/a\r\n" + b"delete empire/plans\r\n" * 1000)
    expected = b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n" + DENIED * 1000
    assert read_exactly(monitor, len(expected)) == expected
