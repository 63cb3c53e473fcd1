#!/usr/bin/env python3
"""Sends R2-D2 requests from a chosen source address and prints each reply."""

import argparse
import socket
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from", dest="source", required=True, help="source IP to bind (an identity)")
    parser.add_argument("--to", default="127.0.0.1:4000", help="HOST:PORT of the proxy")
    parser.add_argument("requests", nargs="+", help='request lines, e.g. "READ /public/plans"')
    args = parser.parse_args()
    host, port = args.to.rsplit(":", 1)
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((args.source, 0))
    sock.connect((host, int(port)))
    stream = sock.makefile("rb")
    for request in args.requests:
        try:
            sock.sendall(request.encode() + b"\r\n")
            reply = stream.readline()
        except OSError:
            reply = b""
        if not reply:
            print(f"  {request:<28} -> connection closed by the proxy")
            return 0
        print(f"  {request:<28} -> {reply.decode().rstrip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
