#!/usr/bin/env python3
"""A tiny R2-D2 server for the demo and the tests.

Every request line gets one reply line:
  READ <file>   -> OK <contents>   or  ERROR no such file
  WRITE <file>  -> OK written
  HALT          -> OK halted
  RESET         -> OK reset
Anything else -> ERROR bad request. Files live in memory.
"""

import argparse
import asyncio

FILES = {
    "/public/plans": "the rebel base is on Hoth",
    "/public/maps": "Dagobah system",
    "/secret/deathstar": "exhaust port, 2 metres wide",
}


def answer(line: bytes) -> bytes:
    parts = line.decode("utf-8", "replace").split(" ")
    if parts[0] == "READ" and len(parts) == 2:
        content = FILES.get(parts[1])
        return b"OK " + content.encode() if content else b"ERROR no such file"
    if parts[0] == "WRITE" and len(parts) == 2:
        FILES.setdefault(parts[1], "")
        return b"OK written"
    if parts == ["HALT"]:
        return b"OK halted"
    if parts == ["RESET"]:
        return b"OK reset"
    return b"ERROR bad request"


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(answer(line[:-2]) + b"\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:4001", help="HOST:PORT to listen on")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(serve, host, int(port))
    bound = server.sockets[0].getsockname()
    print(f"r2d2 upstream listening on {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
