"""Requests no client library sends, written byte by byte from Kafka's message definitions
(MetadataRequest.json and MetadataResponse.json version 12, DeleteTopicsRequest.json and
DeleteTopicsResponse.json version 6, all flexible: compact strings and arrays, tagged fields),
through `axoneme run` to tansu under the Empire's policy: what a client crafting its own
requests may and may not reach.

A Metadata v10+ or DeleteTopics v6+ topic entry carries both a topic id and a nullable name.
Kafka's broker answers a Metadata request by ids as soon as one entry has a non-zero id and
ignores the names, and refuses a DeleteTopics entry with both; tansu takes a Metadata entry's
name when it has one, and a DeleteTopics entry's id when it is not zero. An entry naming one
topic by its id and another by its name is read differently by the two, so the proxy refuses
it: judged by one of them, tansu would act on the other."""

import socket
import struct
import time

from conftest import HQ, OUTPOST

ZERO_ID = bytes(16)
TIMEOUT = 10


def uvarint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def compact_string(text):
    """A compact nullable string: its length + 1 as an unsigned varint (0: null), then it."""
    if text is None:
        return b"\x00"
    data = text.encode()
    return uvarint(len(data) + 1) + data


def metadata_v12(correlation_id: int, entries, auto_create: bool) -> bytes:
    """A Metadata v12 request frame: request header v2 (client id `raw`, no tagged fields),
    then the topic entries (id, name, no tagged fields; `None`: a null array, which asks for
    every topic), allow_auto_topic_creation,
    include_topic_authorized_operations false, no tagged fields."""
    header = struct.pack(">hhih", 3, 12, correlation_id, 3) + b"raw" + b"\x00"
    body = b"\x00" if entries is None else uvarint(len(entries) + 1)
    for topic_id, name in entries or []:
        body += topic_id + compact_string(name) + b"\x00"
    body += bytes([auto_create, 0]) + b"\x00"
    message = header + body
    return struct.pack(">i", len(message)) + message


def delete_topics_v6(correlation_id: int, entries) -> bytes:
    """A DeleteTopics v6 request frame: request header v2 (client id `raw`, no tagged fields),
    then the topic entries (name, id, no tagged fields), a timeout of 5 s, no tagged fields."""
    header = struct.pack(">hhih", 20, 6, correlation_id, 3) + b"raw" + b"\x00"
    body = uvarint(len(entries) + 1)
    for name, topic_id in entries:
        body += compact_string(name) + topic_id + b"\x00"
    body += struct.pack(">i", 5000) + b"\x00"
    message = header + body
    return struct.pack(">i", len(message)) + message


def read_frame(sock: socket.socket):
    """One response frame without its length, or None once the connection is closed."""
    head = sock.recv(4, socket.MSG_WAITALL)
    if len(head) < 4:
        return None
    (length,) = struct.unpack(">i", head)
    return sock.recv(length, socket.MSG_WAITALL)


class Cursor:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def int(self, fmt: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def uvarint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    def string(self):
        n = self.uvarint() - 1
        return None if n < 0 else self.take(n).decode()

    def tagged_fields(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def metadata_topics(response: bytes) -> dict:
    """The topics of a Metadata v12 response (response header v1), by name: (error, id)."""
    r = Cursor(response)
    r.int(">i")  # correlation id
    r.tagged_fields()
    r.int(">i")  # throttle time
    for _ in range(r.uvarint() - 1):  # brokers
        r.int(">i")
        r.string()
        r.int(">i")
        r.string()
        r.tagged_fields()
    r.string()  # cluster id
    r.int(">i")  # controller id
    topics = {}
    for _ in range(r.uvarint() - 1):
        error = r.int(">h")
        name = r.string()
        topic_id = r.take(16)
        r.take(1)  # is internal
        for _ in range(r.uvarint() - 1):  # partitions
            r.take(2 + 4 + 4 + 4)
            for _ in range(3):  # replicas, in-sync replicas, offline replicas
                r.take(4 * (r.uvarint() - 1))
            r.tagged_fields()
        r.int(">i")  # topic authorized operations
        r.tagged_fields()
        topics[name] = (error, topic_id)
    return topics


def wait_for(condition, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def ask(bootstrap: str, request: bytes):
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        return read_frame(sock)


def test_an_outpost_naming_the_plans_behind_the_id_of_the_announcements_learns_nothing(empire):
    # Headquarters make sure both topics exist (they may create any).
    answer = ask(empire.become_(HQ), metadata_v12(
        1, [(ZERO_ID, "empire-announce"), (ZERO_ID, "deathstar-plans")], True))
    topics = metadata_topics(answer)
    assert topics["empire-announce"][0] == 0 and topics["deathstar-plans"][0] == 0, topics

    bootstrap = empire.become_(OUTPOST)
    # The outpost may ask about the announcements, which teaches it and the proxy their id.
    own = metadata_topics(ask(bootstrap, metadata_v12(2, [(ZERO_ID, "empire-announce")], False)))
    error, announce_id = own["empire-announce"]
    assert error == 0 and announce_id != ZERO_ID, own
    # The plans named behind the announcements' id: tansu would describe the plans.
    disguised = metadata_v12(3, [(announce_id, "deathstar-plans")], False)
    answer = ask(bootstrap, disguised)
    assert answer is None, f"the proxy closes the connection, not {metadata_topics(answer)}"
    assert wait_for(lambda: any(
        e["entry_type"] == "Denied" and "both an id and a name" in e["generic_l7"]["fields"]
        .get("status", "") for e in empire.entries())), "the refusal is logged"


def test_headquarters_deleting_the_drills_cannot_name_the_plans_by_id(empire):
    bootstrap = empire.become_(HQ)
    answer = ask(bootstrap, metadata_v12(
        1, [(ZERO_ID, "empire-drills"), (ZERO_ID, "deathstar-plans")], True))
    topics = metadata_topics(answer)
    assert topics["empire-drills"][0] == 0 and topics["deathstar-plans"][0] == 0, topics
    plans_id = topics["deathstar-plans"][1]
    assert plans_id != ZERO_ID
    # Headquarters may delete the drills only: the drills' name with the plans' id, which
    # tansu deletes.
    answer = ask(bootstrap, delete_topics_v6(2, [("empire-drills", plans_id)]))
    assert answer is None, "the proxy closes the connection"
    assert wait_for(lambda: any(
        e["entry_type"] == "Denied" and "both an id and a name" in e["generic_l7"]["fields"]
        .get("status", "") for e in empire.entries())), "the refusal is logged"
    still = metadata_topics(ask(bootstrap, metadata_v12(3, [(ZERO_ID, "deathstar-plans")], False)))
    assert still["deathstar-plans"] == (0, plans_id), still


def test_an_outpost_asking_about_no_topic_or_every_topic_hears_only_of_the_announcements(empire):
    # tansu answers an empty topic array (which asks for none) as a null one (which asks for
    # every topic): either way the answer keeps only the topics the outpost may ask about.
    answer = ask(empire.become_(HQ), metadata_v12(
        1, [(ZERO_ID, "empire-announce"), (ZERO_ID, "deathstar-plans")], True))
    assert {"empire-announce", "deathstar-plans"} <= set(metadata_topics(answer))
    bootstrap = empire.become_(OUTPOST)
    for correlation_id, entries in [(2, []), (3, None)]:
        topics = metadata_topics(ask(bootstrap, metadata_v12(correlation_id, entries, False)))
        assert set(topics) == {"empire-announce"}, (entries, topics)
