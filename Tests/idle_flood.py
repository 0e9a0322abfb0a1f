#!/usr/bin/python3
"""Holds many idle loopback connections to an HTTP server, as a flood does.

  idle_flood.py --port P --count N [--trickle T] [--host 127.0.0.1]

Opens N connections that send nothing; the first T of them trickle a request
head, one byte a second. Prints `READY <N>` once all are connected, then holds
them until stdin closes (the test ended), at most --deadline seconds (default
120). A separate process so that the test's own descriptors (and the
server's, when it runs in the test process) need not share one RLIMIT_NOFILE.
"""
import argparse
import resource
import select
import socket
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--count", type=int, required=True)
parser.add_argument("--trickle", type=int, default=0)
parser.add_argument("--deadline", type=float, default=120)
args = parser.parse_args()

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
connections = []
for _ in range(args.count):
    connection = socket.create_connection((args.host, args.port), timeout=10)
    connection.setblocking(False)
    connections.append(connection)
print("READY", len(connections), flush=True)

head = b"GET /metrics HTTP/1.1\r\nHost: flood\r\nX-Slow: " + b"a" * 200
end = time.monotonic() + args.deadline
sent = 0
while time.monotonic() < end:
    for connection in connections[: args.trickle]:
        try:
            connection.send(head[sent % len(head) : sent % len(head) + 1])
        except OSError:
            pass  # closed by the server (e.g. its head deadline): fine
    sent += 1
    readable, _, _ = select.select([sys.stdin], [], [], 1.0)
    if readable and not sys.stdin.read(1):
        break
