#!/usr/bin/python3
"""The checks that run inside the QEMU guest (Debian 12, its own 6.1 kernel).

Installs the statically built tcptop-exporter with the shipped systemd unit
and config, starts it under the guest's systemd (Type=notify), moves known
bytes between named processes over 127.0.0.1 and ::1, and compares the
scraped /metrics exactly. Then reload, stop, and nothing left in the kernel.
Then the same exact-bytes checks once more with the daemon forced to kprobe
mode, and more threads blocked in recv() than kretprobe instances.
Prints `ok - ...` / `not ok - ...` lines (also to the serial console, so a
host that only gets the console still sees them) and a final count line.
"""
import argparse
import ctypes
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "traffic_peer.py")
METRICS = "http://127.0.0.1:9435/metrics"
UNIT = "tcptop-exporter"

results = []
out_file = None


def emit(line):
    print(line, flush=True)
    if out_file:
        out_file.write(line + "\n")
        out_file.flush()
        os.fsync(out_file.fileno())
    try:
        with open("/dev/console", "w") as console:
            console.write("TCPTOP-GUEST: " + line + "\n")
    except OSError:
        pass


def check(passed, name, detail=""):
    results.append(bool(passed))
    emit(("ok - " if passed else "not ok - ") + name + ("" if passed or not detail else f" ({detail})"))
    return passed


def run(*args, timeout=120):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def scrape():
    with urllib.request.urlopen(METRICS, timeout=30) as response:
        return response.read().decode("utf-8")


SAMPLE = re.compile(r'^(\w+)\{(.*)\} (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text):
    """(family name, {labels}, value) of every labelled sample."""
    parsed = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            parsed.append((match.group(1), dict(LABEL.findall(match.group(2))), match.group(3)))
    return parsed


class Peer:
    def __init__(self, args):
        self.process = subprocess.Popen(["/usr/bin/python3", PEER] + args, stdout=subprocess.PIPE, text=True)

    def ready(self):
        line = self.process.stdout.readline().split()
        fields = dict(part.split("=", 1) for part in line[1:])
        return int(fields["pid"]), int(fields["port"])

    def done(self):
        line = self.process.stdout.readline().strip()
        return self.process.wait(timeout=120) == 0 and line == "DONE"


def exchange(family, client_name, server_name, client_sends, server_sends, seed, peek=False):
    server = Peer(["serve", "--family", family, "--name", server_name, "--receive", str(client_sends),
                   "--send", str(server_sends), "--seed", str(seed)] + (["--peek"] if peek else []))
    server_pid, server_port = server.ready()
    client = Peer(["connect", "--family", family, "--name", client_name, "--port", str(server_port),
                   "--send", str(client_sends), "--receive", str(server_sends), "--seed", str(seed + 1)])
    client_pid, client_port = client.ready()
    if not (client.done() and server.done()):
        raise RuntimeError(f"peers {client_name}/{server_name} failed")
    loopback = "127.0.0.1" if family == "4" else "::1"
    return [
        # (pid, comm, family, laddr, lport, raddr, rport, sent, received)
        (client_pid, client_name, family, loopback, client_port, loopback, server_port, client_sends, server_sends),
        (server_pid, server_name, family, loopback, server_port, loopback, client_port, server_sends, client_sends),
    ]


def sendfile_exchange(size):
    """A client named gt-sendfile that sends with sendfile(2): through
    tcp_sendpage on kernels before 6.5, not tcp_sendmsg."""
    server = Peer(["serve", "--family", "4", "--name", "gt-sf-srv", "--receive", str(size), "--send", "0"])
    server_pid, server_port = server.ready()
    with tempfile.TemporaryFile() as data:
        data.write(b"s" * size)
        data.flush()
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read_end)
            libc = ctypes.CDLL(None)
            libc.prctl(15, ctypes.c_char_p(b"gt-sendfile"), 0, 0, 0)
            conn = socket.create_connection(("127.0.0.1", server_port))
            os.write(write_end, f"{conn.getsockname()[1]}\n".encode())
            offset = 0
            while offset < size:
                offset += os.sendfile(conn.fileno(), data.fileno(), offset, size - offset)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
            conn.close()
            os._exit(0)
        os.close(write_end)
        client_port = int(os.read(read_end, 64).decode().strip())
        os.close(read_end)
        _, status = os.waitpid(child, 0)
    if status != 0 or not server.done():
        raise RuntimeError("sendfile exchange failed")
    return [(child, "gt-sendfile", "4", "127.0.0.1", client_port, "127.0.0.1", server_port, size, 0),
            (server_pid, "gt-sf-srv", "4", "127.0.0.1", server_port, "127.0.0.1", client_port, 0, size)]


def shared_exchange(client_sends, server_sends):
    """Fork after connect: the child (NAME-k) sends the first half on the
    parent's socket. Each process is its own connection end."""
    server = Peer(["serve", "--name", "gt-share-s", "--receive", str(client_sends), "--send", str(server_sends)])
    server_pid, server_port = server.ready()
    client = Peer(["connect", "--name", "gt-share", "--port", str(server_port), "--send", str(client_sends),
                   "--receive", str(server_sends), "--share"])
    parent_pid, client_port = client.ready()
    child_pid = int(client.process.stdout.readline().split()[1].split("=")[1])
    if not (client.done() and server.done()):
        raise RuntimeError("shared-socket peers failed")
    half = client_sends // 2
    at = ("4", "127.0.0.1", client_port, "127.0.0.1", server_port)
    return [(child_pid, "gt-share-k", at[0], at[1], at[2], at[3], at[4], half, 0),
            (parent_pid, "gt-share", at[0], at[1], at[2], at[3], at[4], client_sends - half, server_sends)]


def check_ends(text, ends, what):
    parsed = samples(text)
    for pid, comm, family, laddr, lport, raddr, rport, sent, received in ends:
        labels = {"pid": str(pid), "comm": comm, "family": "ipv" + family, "laddr": laddr, "lport": str(lport),
                  "raddr": raddr, "rport": str(rport)}
        got = {}
        for name, sample_labels, value in parsed:
            if sample_labels.get("pid") == str(pid):
                got.setdefault(name, []).append((sample_labels, value))
        sent_series = got.get("tcptop_sent_bytes_total", [])
        received_series = got.get("tcptop_received_bytes_total", [])
        exact = (len(sent_series) == 1 and len(received_series) == 1
                 and sent_series[0] == (labels, str(sent)) and received_series[0] == (labels, str(received)))
        check(exact, f"{what}: {comm} (ipv{family}) sent {sent} and received {received} bytes, exactly",
              f"pid {pid}: got {sent_series} {received_series}; same comm: "
              + " ".join(f"{n}{l} {v}" for n, l, v in parsed if l.get("comm") == comm))


def blocked_receivers(count):
    """`count` threads of this process blocked in recv() at once, each then
    given 1 byte and EOF: more kretprobe instances than the kernel's default
    maxactive (max(10, 2 x CPUs)) in kprobe mode. Half the threads call
    recv() again (a missed return is found at the next call), half end at
    once (found when the thread exits)."""
    import threading
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(count)
    port = listener.getsockname()[1]
    got = []

    def receive(again):
        with socket.create_connection(("127.0.0.1", port)) as conn:
            data = conn.recv(1)
            while again and conn.recv(1):
                pass
            got.append(len(data))

    threads = [threading.Thread(target=receive, args=(index % 2 == 0,)) for index in range(count)]
    for thread in threads:
        thread.start()
    accepted = [listener.accept()[0] for _ in range(count)]
    time.sleep(3)  # every thread is inside recv() now
    for conn in accepted:
        conn.sendall(b"x")
        conn.close()
    for thread in threads:
        thread.join(timeout=60)
    listener.close()
    return port, sum(got)


def kprobe_pass():
    """The daemon again, forced to kprobe mode (Debian's kernel has kprobes):
    the same exact-bytes checks, then more blocked receivers than kretprobe
    instances, whose missed returns must show as unattributed events."""
    log = open("/tmp/kprobe-daemon.log", "w")
    daemon = subprocess.Popen(["/usr/local/bin/tcptop-exporter", "--config.file=/etc/tcptop-exporter/tcptop-exporter.yml",
                               "--bpf.attach-mode=kprobe"], stdout=log, stderr=subprocess.STDOUT)
    try:
        t = time.monotonic()
        text = None
        while time.monotonic() - t < 120 and daemon.poll() is None:
            try:
                text = scrape()
                break
            except OSError:
                time.sleep(0.5)
        lines = open("/tmp/kprobe-daemon.log").read().splitlines()
        if not check(text is not None, f"kprobe mode: the daemon serves /metrics ({time.monotonic() - t:.1f} s)",
                     " | ".join(lines[-4:])):
            return
        check(any("mode=kprobe" in l for l in lines), "kprobe mode: the log names it", " | ".join(lines[-4:]))
        loaded = run("bpftool", "-j", "prog", "show").stdout
        names = sorted(re.findall(r'"name":"(tcptop[^"]*)"', loaded))
        expected = sorted(["tcptop_kprobe_send", "tcptop_kretprobe_send", "tcptop_kprobe_recv", "tcptop_kretprobe_recv",
                           "tcptop_kprobe_sendpage", "tcptop_kretprobe_sendpage", "tcptop_kprobe_destroy",
                           "tcptop_kprobe_exit", "tcptop_kprobe_dump"])
        check(names == expected, "kprobe mode: only its programs are loaded: " + " ".join(names), f"expected {expected}")
        check('tcptop_exporter_attach_mode{mode="kprobe"} 1' in text.splitlines(),
              'kprobe mode: tcptop_exporter_attach_mode{mode="kprobe"} 1',
              " ".join(l for l in text.splitlines() if "attach_mode" in l))
        ends = []
        ends += exchange("4", "gk-cli-4a", "gk-srv-4a", 1, 123457, seed=11)
        ends += exchange("4", "gk-cli-4b", "gk-srv-4b", 1000000, 1, seed=13, peek=True)
        ends += exchange("6", "gk-cli-6a", "gk-srv-6a", 65536, 3000001, seed=15)
        ends += exchange("6", "gk-cli-6b", "gk-srv-6b", 123457, 1, seed=17, peek=True)
        check_ends(scrape(), ends, "kprobe mode, exact bytes")
        sendfile_ends = sendfile_exchange(200000)
        check_ends(scrape(), sendfile_ends, "kprobe mode, sendfile (tcp_sendpage)")
        shared_ends = shared_exchange(300001, 4242)
        check_ends(scrape(), shared_ends, "kprobe mode, one socket, two processes")

        def missed(text):
            return sum(int(float(v)) for n, l, v in samples(text)
                       if n == "tcptop_unattributed_events_total" and l.get("direction") == "received")
        before = missed(scrape())
        count = 40
        port, received = blocked_receivers(count)
        text = scrape()
        counted = sum(int(float(v)) for n, l, v in samples(text) if n == "tcptop_received_bytes_total"
                      and l.get("pid") == str(os.getpid()) and l.get("rport") == str(port))
        lost = missed(text) - before
        check(received == count and counted + lost == count and lost > 0,
              f"kprobe mode, {count} threads blocked in recv(): {counted} bytes counted, {lost} missed returns "
              "counted as unattributed events, none silently lost", f"received {received}")
    finally:
        daemon.terminate()
        try:
            check(daemon.wait(timeout=60) == 0, "kprobe mode: the daemon stops cleanly")
        except subprocess.TimeoutExpired:
            daemon.kill()
            check(False, "kprobe mode: the daemon stops cleanly", "killed")
        programs = run("bpftool", "prog", "show").stdout
        check("tcptop" not in programs, "kprobe mode: no BPF program left after stop",
              " ".join(l for l in programs.splitlines() if "tcptop" in l))


def main():
    global out_file
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.out:
        out_file = open(args.out, "w")
    started = time.monotonic()
    release = os.uname().release
    emit(f"# guest kernel {release}, uptime {open('/proc/uptime').read().split()[0]} s")
    btf = run("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux").stdout
    check("btf_trace_sock_send_length" not in btf and "'tcp_recvmsg'" in btf,
          "the kernel has no sock_send_length tracepoint but has tcp_recvmsg (the fallback's case)")

    # The shipped unit and config, as `make install` would put them.
    os.makedirs("/usr/local/bin", exist_ok=True)
    shutil.copy(os.path.join(HERE, "tcptop-exporter"), "/usr/local/bin/tcptop-exporter")
    os.chmod("/usr/local/bin/tcptop-exporter", 0o755)
    os.makedirs("/etc/tcptop-exporter", exist_ok=True)
    shutil.copy(os.path.join(HERE, "tcptop-exporter.yml"), "/etc/tcptop-exporter/tcptop-exporter.yml")
    shutil.copy(os.path.join(HERE, "tcptop-exporter.service"), "/etc/systemd/system/tcptop-exporter.service")
    run("systemctl", "daemon-reload")

    version = run("/usr/local/bin/tcptop-exporter", "--version")
    check(version.returncode == 0, "the static binary runs on Debian 12", version.stderr.strip())

    t = time.monotonic()
    start = run("systemctl", "start", UNIT, timeout=180)
    start_seconds = time.monotonic() - t
    check(start.returncode == 0, f"systemctl start returns after READY ({start_seconds:.1f} s)", start.stderr.strip())
    state = run("systemctl", "show", UNIT, "-p", "ActiveState", "-p", "SubState", "-p", "StatusText").stdout
    check("ActiveState=active" in state and "SubState=running" in state, "the unit is active (running)", state)
    check("StatusText=Serving /metrics on" in state, "STATUS= says what it serves", state)
    journal = run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
    check("mode=fexit" in journal, "the log names the chosen attach mode",
          " | ".join(journal.splitlines()[-6:]))

    loaded = run("bpftool", "-j", "prog", "show").stdout
    names = sorted(re.findall(r'"name":"(tcptop[^"]*)"', loaded))
    # tcp_recvmsg has 5 arguments on 6.1; tcp_sendpage still exists.
    expected = ["tcptop_destroy", "tcptop_dump", "tcptop_fexit_recv5", "tcptop_fexit_send", "tcptop_fexit_sendpage"]
    check(names == expected, "only the fexit mode's programs are loaded: " + " ".join(names), f"expected {expected}")
    text = scrape()
    check('tcptop_exporter_attach_mode{mode="fexit"} 1' in text.splitlines(),
          'tcptop_exporter_attach_mode{mode="fexit"} 1',
          " ".join(l for l in text.splitlines() if "attach_mode" in l))

    t = time.monotonic()
    ends = []
    ends += exchange("4", "gt-cli-4a", "gt-srv-4a", 1, 123457, seed=1)
    ends += exchange("4", "gt-cli-4b", "gt-srv-4b", 1000000, 1, seed=3, peek=True)
    ends += exchange("6", "gt-cli-6a", "gt-srv-6a", 65536, 3000001, seed=5)
    ends += exchange("6", "gt-cli-6b", "gt-srv-6b", 123457, 1, seed=7, peek=True)
    traffic_seconds = time.monotonic() - t
    emit(f"# traffic: {len(ends) // 2} exchanges in {traffic_seconds:.1f} s")
    text = scrape()
    check_ends(text, ends, "exact bytes")
    sendfile_ends = sendfile_exchange(200000)
    check_ends(scrape(), sendfile_ends, "sendfile (tcp_sendpage)")
    shared_ends = shared_exchange(300001, 4242)
    check_ends(scrape(), shared_ends, "one socket, two processes")

    reload = run("systemctl", "reload", UNIT)
    time.sleep(1)
    state = run("systemctl", "show", UNIT, "-p", "ActiveState").stdout
    check(reload.returncode == 0 and "ActiveState=active" in state, "systemctl reload keeps it running",
          reload.stderr.strip() + state)
    journal = run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
    check('msg="configuration reloaded"' in journal, "the daemon re-read its configuration on reload",
          " | ".join(journal.splitlines()[-4:]))
    check_ends(scrape(), ends, "after reload")

    security = run("systemd-analyze", "security", UNIT, "--no-pager")
    overall = [l for l in security.stdout.splitlines() if "Overall exposure" in l]
    check(security.returncode == 0 and overall, "systemd-analyze security: " + (overall[0].strip() if overall else "?"),
          security.stderr.strip())

    t = time.monotonic()
    stop = run("systemctl", "stop", UNIT, timeout=120)
    stop_seconds = time.monotonic() - t
    state = run("systemctl", "show", UNIT, "-p", "ActiveState", "-p", "Result", "-p", "ExecMainStatus").stdout
    check(stop.returncode == 0 and "ActiveState=inactive" in state and "Result=success" in state
          and "ExecMainStatus=0" in state, f"systemctl stop: clean exit ({stop_seconds:.1f} s)", state)
    programs = run("bpftool", "prog", "show").stdout
    check("tcptop" not in programs, "no BPF program left after stop",
          " ".join(l for l in programs.splitlines() if "tcptop" in l))

    t = time.monotonic()
    kprobe_pass()
    kprobe_seconds = time.monotonic() - t

    passed = sum(results)
    failed = len(results) - passed
    emit(f"# kprobe pass took {kprobe_seconds:.1f} s")
    emit(f"# guest checks took {time.monotonic() - started:.1f} s (start {start_seconds:.1f} s, traffic {traffic_seconds:.1f} s)")
    emit(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # one line, so that the host sees why
        check(False, f"guest check crashed: {type(error).__name__}: {error}")
        emit(f"{sum(results)} passed, {len(results) - sum(results)} failed")
        sys.exit(1)
