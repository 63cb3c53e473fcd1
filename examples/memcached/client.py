#!/usr/bin/env python3
"""Sends memcached text commands from a chosen source address and prints each reply.

Each argument is one command line, sent as written ("get alliance/fleet/x-wing",
"delete alliance/fleet/x-wing", "stats", "mg alliance/fleet/x-wing v"), except that the storage
commands take their value inline: "set KEY VALUE" (also add, replace, append, prepend) is sent
as "set KEY 0 0 <length>" followed by the value as its data block. Other commands ending in
"noreply" are sent without waiting for a reply.
"""

import argparse
import socket
import sys

STORAGE = {"set", "add", "replace", "append", "prepend"}
# Reply lines after which more of the same reply follows.
CONTINUED = ("VALUE ", "STAT ")


def encode(command: str) -> bytes:
    words = command.split(" ", 2)
    if words[0] in STORAGE and len(words) == 3:
        value = words[2].encode()
        return f"{words[0]} {words[1]} 0 0 {len(value)}\r\n".encode() + value + b"\r\n"
    return command.encode() + b"\r\n"


def read_reply(stream) -> list[str]:
    """The lines of one reply: data blocks of VALUE and VA lines included, through END for
    multi-line replies."""
    lines = []
    while True:
        line = stream.readline()
        if not line:
            raise ConnectionError("closed")
        text = line.decode(errors="replace").rstrip("\r\n")
        lines.append(text)
        words = text.split(" ")
        if words[0] in ("VALUE", "VA"):
            size = int(words[3] if words[0] == "VALUE" else words[1])
            lines.append(stream.read(size + 2).decode(errors="replace").rstrip("\r\n"))
        if words[0] == "VA" or not text.startswith(CONTINUED):
            return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="source IP to bind (an identity)")
    parser.add_argument("--to", default="127.0.0.1:11212", help="HOST:PORT of the proxy")
    parser.add_argument("commands", nargs="+", help='command lines, e.g. "get alliance/fleet/x-wing"')
    args = parser.parse_args()
    host, port = args.to.rsplit(":", 1)
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((args.source, 0))
    sock.connect((host, int(port)))
    stream = sock.makefile("rb")
    for command in args.commands:
        words = command.split(" ")
        if words[0] not in STORAGE and words[-1] == "noreply":
            sock.sendall(encode(command))
            print(f"  {command:<48} -> (noreply: nothing comes back)")
            continue
        try:
            sock.sendall(encode(command))
            reply = " | ".join(read_reply(stream))
        except OSError:
            print(f"  {command:<48} -> connection closed by the proxy")
            return 0
        print(f"  {command:<48} -> {reply}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
