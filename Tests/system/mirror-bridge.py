#!/usr/bin/env python3
"""Lets apt inside the test container reach the Debian mirror this machine
uses, though the container has a network namespace of its own with only a
loopback: listens on 127.0.0.1:PORT in the container's namespace and copies
each connection to HOST:PORT, connected from this process's own namespace.
The container's /etc/hosts maps HOST to 127.0.0.1 (the caller writes it), so
apt's sources, Host header and TLS names stay the mirror's.

    mirror-bridge.py CONTAINER_PID HOST PORT [LIFETIME_SECONDS]

Prints READY once listening. Bounded: it exits after LIFETIME_SECONDS (default
900); a connection that moves nothing for 60 s is closed.
"""
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    # Switches the calling thread only: done before any other thread starts.
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def pump(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(client, host, port):
    try:
        upstream = socket.create_connection((host, port), timeout=30)
    except OSError as error:
        print(f"connect {host}:{port}: {error}", file=sys.stderr, flush=True)
        client.close()
        return
    client.settimeout(60)
    upstream.settimeout(60)
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join(60)
    client.close()
    upstream.close()


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit("usage: mirror-bridge.py CONTAINER_PID HOST PORT [LIFETIME_SECONDS]")
    pid, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lifetime = float(sys.argv[4]) if len(sys.argv) == 5 else 900.0
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    container = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    setns(container)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    setns(home)
    os.close(home)
    os.close(container)
    timer = threading.Timer(lifetime, lambda: os._exit(0))
    timer.daemon = True
    timer.start()
    print("READY", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, host, port), daemon=True).start()


if __name__ == "__main__":
    main()
