#!/usr/bin/python3
"""A TCP peer with a chosen process name that moves a known number of bytes.

The end-to-end tests run two of these (a server and a client) and compare
what tcptop-exporter / tcptop report with the bytes they really moved.

  traffic_peer.py serve   --family 4|6 --name NAME --receive N --send M [--peek]
  traffic_peer.py connect --family 4|6 --name NAME --port P --send N --receive M
  traffic_peer.py probe   --name NAME --address A --port P   (one connect, its outcome)
  traffic_peer.py many    --name NAME --count N --send M     (N held connections to itself)

--address replaces loopback (the address to bind or connect to). With
--tcp-info, a client prints `TCPINFO rtt_us=R rttvar_us=V total_retrans=T`
(the kernel's getsockopt(TCP_INFO) of its socket) after its transfer. A
probe prints `CONNECT result=OK|<errno name> seconds=S` and `DONE`. `many`
opens its connections after a line on stdin, M bytes each way on each,
says `HOLDING`, and closes them after the next line.

Each prints one line `READY pid=<pid> port=<local port>` once its socket is
set up, and `DONE` after the peer closed. Sends go out in random chunk sizes
(seeded by --seed) so that many send/recv calls are summed.

Every wait is bounded, so a peer never outlives a test that gave up on it:
each accept, connect, send, receive and the --hold wait at most --timeout
seconds (default 60), and the whole run at most --deadline seconds (default
300, SIGALRM). Past either, the peer says on stderr what it was waiting for
and exits with status 3.
"""
import argparse
import ctypes
import errno
import os
import random
import select
import signal
import socket
import struct
import sys
import time

PR_SET_NAME = 15
TIMED_OUT = 3

# What the peer is waiting for right now, for the timeout message.
waiting_for = "start-up"


def give_up(message):
    print(f"traffic_peer {os.getpid()}: {message}", file=sys.stderr, flush=True)
    os._exit(TIMED_OUT)


def on_alarm(signum, frame):
    give_up(f"past the --deadline while waiting for {waiting_for}")


def step(what):
    global waiting_for
    waiting_for = what


def set_process_name(name):
    raw = name.encode("utf-8", "surrogateescape")[:15]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) != 0:
        sys.exit("prctl failed")


# --chunk: every send call this many bytes (0: random sizes up to 64 KiB).
FIXED_CHUNK = 0


def send_exactly(sock, total, rng):
    left = total
    while left > 0:
        chunk = min(left, FIXED_CHUNK or rng.randint(1, 65536))
        step(f"the peer to take bytes ({total - left} of {total} sent)")
        if FIXED_CHUNK:
            # One blocking send call for the chunk (a socket with a timeout
            # sends in pieces as room comes), bounded by --deadline's alarm.
            previous = sock.gettimeout()
            sock.settimeout(None)
            sock.sendall(b"x" * chunk)
            sock.settimeout(previous)
        else:
            sock.sendall(b"x" * chunk)
        left -= chunk


def receive_exactly(sock, total):
    left = total
    while left > 0:
        step(f"bytes from the peer ({total - left} of {total} received)")
        data = sock.recv(min(left, 1 << 20))
        if not data:
            sys.exit(f"peer closed with {left} bytes still expected")
        left -= len(data)


def print_tcp_info(sock):
    # struct tcp_info: 8 one-byte fields, then u32s; tcpi_rtt, tcpi_rttvar are
    # the 16th and 17th, tcpi_total_retrans the 24th.
    fields = struct.unpack_from("8B24I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104))
    print(f"TCPINFO rtt_us={fields[8 + 15]} rttvar_us={fields[8 + 16]} total_retrans={fields[8 + 23]}", flush=True)


def probe(family, address, port, timeout):
    """One non-blocking connect, waited for at most `timeout` seconds."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    started = time.monotonic()
    code = sock.connect_ex((address, port))
    if code == errno.EINPROGRESS:
        step(f"connect to {address} port {port}")
        _, writable, _ = select.select([], [sock], [], timeout)
        if not writable:
            give_up(f"connect to {address} port {port} undecided after {timeout:g} s")
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    result = "OK" if code == 0 else errno.errorcode.get(code, str(code))
    print(f"CONNECT result={result} seconds={time.monotonic() - started:.3f}", flush=True)
    sock.close()
    print("DONE", flush=True)


def wait_line(why, timeout):
    """A line on stdin, at most `timeout` seconds; `why` names the wait."""
    step(f"a line on stdin ({why})")
    readable, _, _ = select.select([sys.stdin], [], [], timeout)
    if not readable:
        give_up(f"no line on stdin within {timeout:g} s ({why})")
    sys.stdin.readline()


def many(family, address, count, size, timeout):
    """`count` loopback connections to ourselves, opened after a line on
    stdin (so that a tracer filtered by our pid can start first), `size`
    bytes each way on each, held until the next line."""
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((address, 0))
    listener.listen(count)
    port = listener.getsockname()[1]
    print(f"READY pid={os.getpid()} port={port}", flush=True)
    wait_line("open", timeout)
    ends = []
    for _ in range(count):
        client = socket.create_connection((address, port))
        server, _ = listener.accept()
        client.sendall(b"c" * size)
        server.sendall(b"s" * size)
        for end in (client, server):
            got = 0
            while got < size:
                piece = end.recv(size - got)
                if not piece:
                    give_up("a connection closed early")
                got += len(piece)
        ends += [client, server]
    print("HOLDING", flush=True)
    wait_line("close", timeout)
    for end in ends:
        end.close()
    print("DONE", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["serve", "connect", "probe", "many"])
    parser.add_argument("--count", type=int, default=1, help="many: connections to hold")
    parser.add_argument("--family", choices=["4", "6"], default="4")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--address", help="bind or connect to this address instead of loopback")
    parser.add_argument("--tcp-info", action="store_true", help="connect: print TCPINFO after the transfer")
    parser.add_argument("--send", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=0,
                        help="send in blocking calls of exactly this many bytes (default: random sizes up to 64 KiB)")
    parser.add_argument("--receive", type=int, default=0)
    parser.add_argument("--peek", action="store_true", help="MSG_PEEK before the first receive")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--share", action="store_true",
                        help="connect: a forked child (named NAME-k) sends the first half, then the parent the rest")
    parser.add_argument("--hold", action="store_true", help="after the transfer, wait for a line on stdin before closing")
    parser.add_argument("--timeout", type=float, default=60, help="seconds any one wait may take")
    parser.add_argument("--deadline", type=int, default=300, help="seconds the whole run may take")
    args = parser.parse_args()
    global FIXED_CHUNK
    if args.chunk < 0:
        give_up("--chunk must be positive")
    FIXED_CHUNK = args.chunk

    # Started from a thread that blocks signals, a child inherits that mask:
    # unblock them so that SIGTERM from a test ends this peer.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.deadline)
    socket.setdefaulttimeout(args.timeout)

    # Names given as \xNN escapes become raw bytes (a comm may hold any byte but NUL).
    name = args.name.encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")
    set_process_name(name)
    rng = random.Random(args.seed)
    family = socket.AF_INET if args.family == "4" else socket.AF_INET6
    loopback = args.address or ("127.0.0.1" if args.family == "4" else "::1")
    if args.mode == "probe":
        return probe(family, loopback, args.port, args.timeout)
    if args.mode == "many":
        return many(family, loopback, args.count, args.send, args.timeout)

    if args.mode == "serve":
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((loopback, 0))
        listener.listen(1)
        print(f"READY pid={os.getpid()} port={listener.getsockname()[1]}", flush=True)
        step("a client to connect (accept)")
        conn, _ = listener.accept()
        listener.close()
    else:
        conn = socket.socket(family, socket.SOCK_STREAM)
        step(f"connect to port {args.port}")
        conn.connect((loopback, args.port))
        print(f"READY pid={os.getpid()} port={conn.getsockname()[1]}", flush=True)

    if args.peek and args.receive > 0:
        step("bytes to peek at")
        conn.recv(min(args.receive, 100), socket.MSG_PEEK)
    if args.mode == "serve":
        receive_exactly(conn, args.receive)
        send_exactly(conn, args.send, rng)
    else:
        if args.share:
            # Two processes on one socket: the child moves bytes first.
            half = args.send // 2
            child = os.fork()
            if child == 0:
                signal.alarm(args.deadline)  # alarms are not inherited across fork
                set_process_name((name + "-k")[:15])
                send_exactly(conn, half, rng)
                os._exit(0)
            step(f"the forked sender {child} to finish")
            _, status = os.waitpid(child, 0)
            if status != 0:
                sys.exit(f"the forked sender {child} failed (wait status {status})")
            print(f"CHILD pid={child} sent={half}", flush=True)
            send_exactly(conn, args.send - half, rng)
        else:
            send_exactly(conn, args.send, rng)
        receive_exactly(conn, args.receive)
        if args.tcp_info:
            print_tcp_info(conn)
    if args.hold:
        print("HOLDING", flush=True)
        wait_line("--hold", args.timeout)
    conn.shutdown(socket.SHUT_WR)
    # Wait for the peer's close (recv returns 0) so both sides end cleanly.
    step("the peer to close")
    while conn.recv(65536):
        pass
    conn.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    try:
        main()
    except socket.timeout:
        give_up(f"no progress within the --timeout while waiting for {waiting_for}")
