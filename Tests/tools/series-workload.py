#!/usr/bin/env python3
"""Series counts of the shipped views on a known workload (README's figures).

    Tests/tools/series-workload.py [EXPORTER] [CONNECTIONS]   (root; default
    .build/release/tcptop-exporter, 3000 connections)

Starts the exporter with Config/tcptop-exporter.yml on a free port, then, from
processes in hand-made cgroups named like units (under the cgroup v2 mount):
"web.service" serves two ports, "api.service" opens CONNECTIONS short
connections to them (1 KiB each way, from ephemeral ports) and "db.service"
holds 4 long connections to a third port; and prints the series per view
(tcptop_exporter_series) and the bytes each view sums to, which must agree.
Every wait is bounded; the cgroups and processes are removed on exit.
"""
import os, re, signal, socket, subprocess, sys, threading, time, urllib.request

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
exporter = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, ".build/release/tcptop-exporter")
connections = int(sys.argv[2]) if len(sys.argv) > 2 else 3000


def cgroup2_mount():
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2":
            return fields[4]
    sys.exit("series-workload: no cgroup2 mount")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_cgroup(path):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


def serve(listener):
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def echo(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def child(cgroup, body):
    pid = os.fork()
    if pid == 0:
        try:
            join_cgroup(cgroup)
            body()
        finally:
            os._exit(0)
    return pid


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def main():
    base = os.path.join(cgroup2_mount(), f"tcptop-workload-{os.getpid()}")
    port = free_port()
    web_ports = [free_port(), free_port()]
    db_port = free_port()
    daemon = subprocess.Popen([exporter, f"--config.file={root}/Config/tcptop-exporter.yml",
                               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])
    children = []
    try:
        deadline = time.time() + 60
        while True:
            try:
                metrics(port)
                break
            except OSError:
                if time.time() > deadline or daemon.poll() is not None:
                    sys.exit("series-workload: the exporter did not start")
                time.sleep(0.2)

        def web():
            listeners = []
            for p in web_ports + [db_port]:
                listener = socket.create_server(("127.0.0.1", p), backlog=512)
                listeners.append(listener)
                threading.Thread(target=serve, args=(listener,), daemon=True).start()
            time.sleep(600)  # killed when done

        children.append(child(os.path.join(base, "web.service"), web))
        time.sleep(1)

        def api():
            for n in range(connections):
                with socket.create_connection(("127.0.0.1", web_ports[n % 2]), timeout=10) as s:
                    s.sendall(b"x" * 1024)
                    got = 0
                    while got < 1024:
                        got += len(s.recv(65536))

        def db():
            held = [socket.create_connection(("127.0.0.1", db_port), timeout=10) for _ in range(4)]
            for s in held:
                s.sendall(b"q" * 4096)
                got = 0
                while got < 4096:
                    got += len(s.recv(65536))
            time.sleep(600)

        children.append(child(os.path.join(base, "db.service"), db))
        api_pid = child(os.path.join(base, "api.service"), api)
        started = time.time()
        _, status = os.waitpid(api_pid, 0)
        if status != 0:
            sys.exit("series-workload: the client failed")
        elapsed = time.time() - started
        time.sleep(3)  # two polls: every close read
        text = metrics(port)
        series = dict(re.findall(r'tcptop_exporter_series\{view="([^"]+)"\} (\d+)', text))
        sums = {}
        for prefix in series:
            sums[prefix] = sum(int(v) for v in re.findall(rf'^{prefix}_sent_bytes_total\{{[^}}]*\}} (\d+)', text, re.M))
        ours = [l for l in text.splitlines() if l.startswith("tcptop_unit_sent_bytes_total") and "tcptop-workload" not in l
                and ('unit="web.service"' in l or 'unit="api.service"' in l or 'unit="db.service"' in l)]
        print(f"# workload: {connections} connections in {elapsed:.1f} s from api.service to web.service's 2 ports "
              f"(1 KiB each way), 4 held by db.service; whole host, retention 5m")
        for prefix, count in series.items():
            print(f"view {prefix}: {count} series, sent bytes summed {sums[prefix]}")
        print("\n".join(ours))
        if len(set(sums.values())) != 1:
            sys.exit("series-workload: the views' sums differ")
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        daemon.terminate()
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
        for name in ("web.service", "api.service", "db.service", ""):
            try:
                os.rmdir(os.path.join(base, name) if name else base)
            except OSError:
                pass


main()
