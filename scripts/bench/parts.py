"""The benchmark's two parts as data: for memcached and for Cassandra, the targets on their
ports, the load shapes, the load's identity and mix, what must be installed or built, and the
words the report describes them with.

Only the table: starting targets and driving load is the runner's, the figures the report's."""

from dataclasses import dataclass, replace

from . import policies
from .targets import Axoneme, CqlFixture, HAProxy, Memcached, Twemproxy

# Ports on 127.0.0.1, away from a system memcached on 11211 and a Cassandra on 9042.
MEMCACHED_PORT = 11311
AXONEME_PORT = 11312
HAPROXY_PORT = 11313
TWEMPROXY_PORT = 11314
TWEMPROXY_STATS_PORT = 11315
CQL_PORT = 9142
CQL_AXONEME_PORT = 9143
CQL_HAPROXY_PORT = 9144
# A second Axoneme build measured beside the first (AXONEME_BASELINE), by part.
BASELINE_PORTS = {"memcached": 11316, "cassandra": 9145}

MEMCACHED_THREADS = 2


@dataclass(frozen=True)
class Shape:
    """A load shape: `connections`, each with `pipeline` requests in flight, and for memcached
    the size of the values set."""

    name: str
    connections: int
    pipeline: int
    value_size: int | None = None

    def args(self) -> list:
        args = ["--connections", str(self.connections), "--pipeline", str(self.pipeline)]
        if self.value_size is not None:
            args += ["--value-size", str(self.value_size)]
        return args


@dataclass(frozen=True)
class Part:
    """A part of the benchmark. `load` and `notes` are words for the report, `intro` the line
    printed before the runs; `{cores}` and `{threads}` in them stand for this machine's cores
    and memcached's threads."""

    name: str  # as BENCH_ONLY names it
    title: str
    targets: tuple  # in the order they start and run in the first round
    protocol: str  # the load generator's subcommand
    source: str  # the address every load connection comes from: the identity Axoneme sees
    load_args: tuple
    shapes: tuple
    compare_with: tuple  # the targets Axoneme's figures are divided by, in the ratios' order
    tools: tuple  # commands it needs, each installed with apt under its own name
    crates: tuple  # workspace binaries it runs besides the agent and the load generator
    load: str
    intro: str
    notes: tuple


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
        ),
        protocol="memcache",
        # Fleet maintenance, which the policy lets set and get keys under alliance/fleet/.
        source="127.0.0.11",
        load_args=("--ratio", "1:4", "--keys", "1000"),
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
              "connection workers (one per core); twemproxy one thread. This machine has "
              "{cores} cores: the load generator (tokio, {cores} workers), memcached and the "
              "proxy under test share them and nothing is pinned.",
        notes=(
            "memcached: {threads} threads. HAProxy: mode tcp, nbthread {cores}. Axoneme: {cores} "
            "connection workers, memcache parser, Rebels' policy, JSON access log to a file. "
            "twemproxy: one thread, one server connection shared by all clients.",
        ),
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
              "a lock; HAProxy {cores} threads; Axoneme {cores} connection workers.",
        notes=(
            "cql-fixture: the workspace's in-memory CQL server (release build; {cores} tokio "
            "workers, one store behind a lock), not Cassandra. HAProxy: mode tcp, nbthread "
            "{cores}. Axoneme: {cores} connection workers, cassandra parser, the Empire's policy "
            "with a select rule added for the outpost, JSON access log to a file.",
            "CQL protocol v4, uncompressed; each connection prepares the INSERT and the SELECT "
            "and then sends EXECUTE, rows without metadata; keys are rows outpost-0 .. "
            "outpost-999, from 127.0.0.31 (the outpost).",
        ),
    ),
)


def with_baseline(part: Part) -> Part:
    """`part` with a second Axoneme, the baseline build, measured in the same rounds and
    compared with first: a before/after of two builds under the same conditions."""
    agent = next(target for target in part.targets if target.name == "Axoneme")
    return replace(part, targets=(*part.targets, agent.baseline(BASELINE_PORTS[part.name])),
                   compare_with=("baseline", *part.compare_with))
