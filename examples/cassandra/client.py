#!/usr/bin/env python3
"""Runs CQL statements with the Python Cassandra driver from a chosen source address (an
identity) through the proxy, and prints each result or error."""

import argparse
import socket
import sys

from cassandra.cluster import Cluster


class BoundSockets:
    """The socket module, with every socket bound to one source address first."""

    def __init__(self, source):
        self.source = source

    def socket(self, *args):
        sock = socket.socket(*args)
        sock.bind((self.source, 0))
        return sock

    def __getattr__(self, name):
        return getattr(socket, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from", dest="source", required=True, help="source IP to bind (an identity)")
    parser.add_argument("--to", default="127.0.0.1:9043", help="HOST:PORT of the proxy")
    parser.add_argument("--protocol", type=int, help="CQL protocol version (default: negotiated, v5 here)")
    parser.add_argument("--lz4", action="store_true", help="ask for LZ4 compression")
    parser.add_argument("statements", nargs="+", help="CQL statements")
    args = parser.parse_args()
    host, port = args.to.rsplit(":", 1)
    bound = type("Bound", (Cluster.connection_class,), {"_socket_impl": BoundSockets(args.source)})
    versions = {} if args.protocol is None else {"protocol_version": args.protocol}
    cluster = Cluster([host], port=int(port), connection_class=bound,
                      compression="lz4" if args.lz4 else False, **versions)
    session = cluster.connect()
    print(f"  (protocol v{cluster.protocol_version}{', LZ4' if args.lz4 else ''})")
    for statement in args.statements:
        try:
            rows = session.execute(statement)
            shown = [tuple(row) for row in rows] if rows.column_names else "ok"
            print(f"  {statement:<72} -> {shown}")
        except Exception as error:  # the driver's own error, shown as a person would see it
            print(f"  {statement:<72} -> {type(error).__name__}")
    cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
