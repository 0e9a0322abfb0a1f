#!/usr/bin/python3
"""Inside the QEMU guest (Debian 12, 6.1): tcptop-exporter next to the stock
tcptop tools of Debian (libbpf-tools' `tcptop`, bcc's `tcptop-bpfcc`) on the
same traffic. Measures, for each tool in turn:
  - exactness: known bytes moved between named processes, against what the
    tool reports (tcptop-exporter: bytes; the tcptop tools print KB, i.e.
    bytes // 1024, so sizes sit on both sides of KB boundaries: one byte too
    many or too few changes the KB shown);
  - cost: BPF run time (kernel.bpf_stats_enabled) of all the tool's programs
    during a burst of small sends, per send/recv call made.
Under emulation absolute times are inflated; compare the tools with each other.
Prints `ok`/`not ok` for "the tool ran and reported", the findings as `#`
lines, and a final count line.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guest_check as g  # noqa: E402  (its Peer, exchange, emit, check)

KB = 1024
# (family, client sends, server sends, server peeks first): each side's size
# is either a whole number of KB or one byte short of one.
EXCHANGES = [("4", 300 * KB - 1, 5 * KB, False), ("4", 1_000 * KB, 64 * KB - 1, False),
             ("6", 2_000 * KB - 1, 100 * KB, False), ("6", 10 * KB, 3_000 * KB - 1, False),
             ("4", 50 * KB - 1, 1 * KB, True)]
NONBLOCKING_BYTES = 4_000 * KB - 1
BURST_SENDS = 20000
BURST_SIZE = 64


def prog_stats():
    listed = json.loads(g.run("bpftool", "-j", "prog", "show").stdout or "[]")
    return {p["id"]: (p.get("name", "?"), p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in listed}


def wait_for_programs(before, process, timeout):
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        new = set(prog_stats()) - before
        if new and len(new) == seen:
            return new  # stable for one poll: all loaded
        seen = len(new)
        time.sleep(2)
    return None


def burst():
    """One connection, BURST_SENDS small sends; returns (send calls, recv calls)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    child = os.fork()
    if child == 0:
        conn = socket.create_connection(listener.getsockname())
        payload = b"b" * BURST_SIZE
        for _ in range(BURST_SENDS):
            conn.send(payload)
        conn.close()
        os._exit(0)
    conn, _ = listener.accept()
    receives = 0
    while True:
        receives += 1
        if not conn.recv(65536):
            break
    conn.close()
    listener.close()
    os.waitpid(child, 0)
    return BURST_SENDS, receives


def nonblocking_exchange(total):
    """A client (cmp-nonblock) on a non-blocking socket with a small send
    buffer that offers 256 KB per send() and moves on with whatever the
    kernel took: partial sends, as in any event loop. Its real bytes are the sum of send()'s returns."""
    server = g.Peer(["serve", "--name", "cmp-nb-srv", "--receive", str(total), "--send", "0"])
    server_pid, server_port = server.ready()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        import ctypes
        import select
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(b"cmp-nonblock"), 0, 0, 0)
        conn = socket.socket()
        # A small send buffer: the kernel takes part of each 256 KB offer.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * KB)
        conn.connect(("127.0.0.1", server_port))
        conn.setblocking(False)
        payload = b"n" * (256 * KB)
        left, calls, partial = total, 0, 0
        while left > 0:
            select.select([], [conn], [])
            try:
                sent = conn.send(payload[:min(left, len(payload))])
            except BlockingIOError:
                sent = 0
            calls += 1
            partial += sent < min(left, len(payload))
            left -= sent
        os.write(write_end, f"{conn.getsockname()[1]} {calls} {partial}\n".encode())
        conn.setblocking(True)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass
        conn.close()
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    client_port, calls, partial = (int(x) for x in os.read(read_end, 128).decode().split())
    os.close(read_end)
    if not server.done():
        raise RuntimeError("non-blocking exchange failed")
    g.emit(f"# non-blocking sender: {calls} send() calls, {partial} of them partial")
    return [(child, "cmp-nonblock", "4", "127.0.0.1", client_port, "127.0.0.1", server_port, total, 0),
            (server_pid, "cmp-nb-srv", "4", "127.0.0.1", server_port, "127.0.0.1", client_port, 0, total)]


def table_rows(text):
    """PID -> (comm, rx_kb, tx_kb) from a tcptop table (both tools' layout)."""
    rows = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0].isdigit() and fields[-1].isdigit() and fields[-2].isdigit():
            rows.setdefault(int(fields[0]), []).append((fields[1], int(fields[-2]), int(fields[-1])))
    return rows


def measure(name, command, reader, load_timeout):
    g.emit(f"# --- {name}: {' '.join(command)}")
    before = set(prog_stats())
    t = time.monotonic()
    output = open(f"/tmp/{command[0].split('/')[-1]}.out", "w+")
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
    programs = wait_for_programs(before, process, load_timeout)
    if not g.check(programs, f"{name}: starts and loads its programs ({time.monotonic() - t:.0f} s)"):
        process.kill()
        output.seek(0)
        g.emit("# " + " | ".join(output.read().splitlines()[-5:]))
        return
    time.sleep(1)
    ends = []
    for index, (family, client, server, peek) in enumerate(EXCHANGES):
        ends += g.exchange(family, f"cmp-cli-{index}", f"cmp-srv-{index}", client, server, seed=index * 2 + 1,
                           peek=peek)
    ends += nonblocking_exchange(NONBLOCKING_BYTES)
    stats0 = prog_stats()
    sends, receives = burst()
    stats1 = prog_stats()
    run_ns = sum(stats1[i][1] - stats0[i][1] for i in programs if i in stats0 and i in stats1)
    runs = sum(stats1[i][2] - stats0[i][2] for i in programs if i in stats0 and i in stats1)
    per_prog = ", ".join(f"{stats1[i][0]} {stats1[i][2] - stats0[i][2]} runs"
                         + (f" {(stats1[i][1] - stats0[i][1]) / max(1, stats1[i][2] - stats0[i][2]):.0f} ns" if stats1[i][2] > stats0[i][2] else "")
                         for i in sorted(programs) if i in stats0 and i in stats1)
    g.emit(f"# {name}: cost: {run_ns / (sends + receives):.0f} ns of BPF per send/recv call "
           f"({sends} sends + {receives} recvs, {runs} program runs; {per_prog})")
    reported = reader(process, output)
    exact = 0
    for pid, comm, family, laddr, lport, raddr, rport, sent, received in ends:
        got = reported.get(pid)
        text = "missing" if got is None else f"comm {got[0]!r}, sent {got[1]}, received {got[2]}"
        unit = got[3] if got else ""
        want = (sent, received) if unit == "bytes" else (sent // KB, received // KB)
        ok = got is not None and (got[1], got[2]) == want
        exact += ok
        g.emit(f"#   {comm} sent {sent} received {received} (expected {want[0]}/{want[1]} {unit or '?'}"
               f"{', server peeked 100 bytes first' if comm.startswith('cmp-srv-4') else ''}): "
               f"{'exact' if ok else 'WRONG'}: {text}")
    g.emit(f"# {name}: exactness: {exact} of {len(ends)} connection ends right")
    g.check(reported, f"{name}: reports the traffic")
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def read_exporter(process, output):
    parsed = g.samples(urllib.request.urlopen("http://127.0.0.1:9435/metrics", timeout=30).read().decode())
    found = {}
    for family, labels, value in parsed:
        if family in ("tcptop_sent_bytes_total", "tcptop_received_bytes_total") and labels["comm"].startswith("cmp-"):
            entry = found.setdefault(int(labels["pid"]), [labels["comm"], 0, 0, "bytes"])
            entry[1 if family == "tcptop_sent_bytes_total" else 2] += int(value)
    return found


def read_table(process, output):
    """On SIGINT both tools print the interval's table and exit (their
    interval is long, so that this is the only table)."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
    output.seek(0)
    text = output.read()
    found = {}
    for pid, rows in table_rows(text).items():
        comm = rows[0][0]
        found[pid] = [comm, sum(r[2] for r in rows), sum(r[1] for r in rows), "KB"]  # TX = sent, RX = received
    return found


INTERVAL = 3600


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.out:
        g.out_file = open(args.out, "w")
    g.emit(f"# guest kernel {os.uname().release}")
    # The image is minbase (no procps, so no sysctl): the file itself.
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as stats:
        stats.write("1\n")
    os.chmod(os.path.join(g.HERE, "tcptop-exporter"), 0o755)
    measure("tcptop-exporter", [os.path.join(g.HERE, "tcptop-exporter"), "--web.listen-address=127.0.0.1:9435"],
            read_exporter, 120)
    measure("libbpf-tools tcptop", ["/usr/sbin/tcptop", "-C", "-S", str(INTERVAL), "1"], read_table, 300)
    measure("bcc tcptop-bpfcc", ["/usr/sbin/tcptop-bpfcc", "-C", "-S", str(INTERVAL), "1"], read_table, 900)
    passed = sum(g.results)
    g.emit(f"{passed} passed, {len(g.results) - passed} failed")
    return 0 if passed == len(g.results) else 1


if __name__ == "__main__":
    sys.exit(main())
