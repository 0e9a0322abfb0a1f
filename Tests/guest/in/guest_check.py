#!/usr/bin/python3
"""The checks that run inside a QEMU guest: Debian 12's userland and one of
several kernels (in/kernel names it: 6.1, 6.12, 5.10; see EXPECT below).

Records what the kernel offers (BTF, the sock_send_length tracepoint,
tcp_recvmsg's arguments) and checks it against the table. Installs the
statically built tcptop-exporter with the shipped systemd unit and config,
starts it under the guest's systemd (Type=notify), checks which attach mode
and read path `auto` chose against the table, moves known bytes between named
processes over 127.0.0.1 and ::1, and compares the scraped /metrics exactly.
Then reload, stop, and nothing left in the kernel. Then the same exact-bytes
checks once more for each forced pass in the table (in kprobe mode also more
threads blocked in recv() than kretprobe instances). Every run that serves
also checks TCP health over a delay line (guest_health.py): retransmits and
RTT against the kernel's own TCP_INFO. Where the table allows
the daemon to refuse the kernel, a refusal passes if it is clean: exit 1, one
error line saying why, never READY.
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

import guest_health

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "traffic_peer.py")
METRICS = "http://127.0.0.1:9435/metrics"
UNIT = "tcptop-exporter"

# What the daemon must do on each guest kernel. Per kernel:
#   release      `uname -r` starts with this
#   tracepoints  BTF has btf_trace_sock_send_length (Linux >= 6.3)
#   recvmsg_args tcp_recvmsg's argument count in BTF (6 before 5.19, 5 since, 4 from 6.18)
#   auto         (mode, read path) that --bpf.attach-mode=auto must choose;
#                a None is recorded (a `#` line), not checked
#   may_refuse   the daemon may refuse this kernel instead (exit 1, one
#                error line, never READY); if it serves, auto is checked
#   programs     the exact tcptop programs auto loads (None: recorded only);
#                tcp:tcp_retransmit_skb's hook is of the close hook's kind
#                (tcptop_retransmit, tcptop_state and the reset hooks with
#                tcptop_destroy, tcptop_raw_ with _raw_)
#   passes       more runs of the daemon, each: (name, flags, (mode, read
#                path) expected, programs or None, extra checks)
#   health       True: every run that serves also counts retransmits and
#                RTT over the delay line, exactly (guest_health.py); else a
#                text saying why this kernel cannot (the check then says so)
# Exact bytes are checked in every run that serves.
KPROBE_PROGRAMS = ["tcptop_kprobe_send", "tcptop_kretprobe_send", "tcptop_kprobe_recv", "tcptop_kretprobe_recv",
                   "tcptop_kprobe_sendpage", "tcptop_kretprobe_sendpage", "tcptop_destroy", "tcptop_thread_exit",
                   "tcptop_retransmit", "tcptop_state", "tcptop_send_reset", "tcptop_receive_reset"]
EXPECT = {
    # The only kernel CI boots that allows the fast path: it must be chosen.
    "6.12": dict(release="6.12.", health=True, tracepoints=True, recvmsg_args=5, read_caps="none",
                 auto=("tp_btf", "storage_iterator"), may_refuse=False,
                 programs=["tcptop_destroy", "tcptop_dump", "tcptop_recv", "tcptop_retransmit", "tcptop_state", "tcptop_send_reset", "tcptop_receive_reset", "tcptop_send"],
                 passes=[("storage_array", ["--bpf.read-path=storage_array"], ("tp_btf", "storage_array"), None, []),
                         ("socket_hash", ["--bpf.read-path=socket_hash"], ("tp_btf", "socket_hash"), None, []),
                         ("raw_tp", ["--bpf.attach-mode=raw_tp"], ("raw_tp", "socket_hash"),
                          ["tcptop_raw_destroy", "tcptop_raw_recv", "tcptop_raw_retransmit", "tcptop_raw_state", "tcptop_raw_send_reset", "tcptop_raw_receive_reset", "tcptop_raw_send"], [])]),
    "6.1": dict(release="6.1.", health=True, tracepoints=False, recvmsg_args=5, read_caps="none",
                auto=("fexit", "storage_iterator"), may_refuse=False,
                # tcp_sendpage still exists on 6.1
                programs=["tcptop_destroy", "tcptop_dump", "tcptop_fexit_recv5", "tcptop_fexit_send",
                          "tcptop_fexit_sendpage", "tcptop_retransmit", "tcptop_state", "tcptop_send_reset", "tcptop_receive_reset"],
                passes=[("kprobe", ["--bpf.attach-mode=kprobe"], ("kprobe", "socket_hash"), KPROBE_PROGRAMS,
                         ["blocked_receivers"]),
                        ("storage_array", ["--bpf.read-path=storage_array"], ("fexit", "storage_array"), None, []),
                        ("socket_hash", ["--bpf.read-path=socket_hash"], ("fexit", "socket_hash"), None, [])]),
    # bpf_sk_storage_get from tracing programs came in 5.11: fexit steps down
    # past both socket-storage read paths (EINVAL, an unknown helper) to the hash.
    "5.10": dict(release="5.10.", health=True, tracepoints=False, recvmsg_args=6, read_caps="CAP_BPF",
                 auto=("fexit", "socket_hash"), may_refuse=False,
                 programs=["tcptop_destroy", "tcptop_fexit_recv6", "tcptop_fexit_send", "tcptop_fexit_sendpage",
                           "tcptop_retransmit", "tcptop_state", "tcptop_send_reset", "tcptop_receive_reset"],
                 passes=[("kprobe", ["--bpf.attach-mode=kprobe"], ("kprobe", "socket_hash"), None, [])]),
}

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



LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def attach_line(lines):
    """The fields of the daemon's startup line that names its choice (mode=, reason=)."""
    for line in lines:
        fields = {k: v[1:-1] if v.startswith('"') else v for k, v in LOGFMT.findall(line)}
        if "mode" in fields and "reason" in fields:
            return fields
    return {}


def attach_metric(text):
    """The labels of tcptop_exporter_attach_mode, or {}."""
    for name, labels, value in samples(text):
        if name == "tcptop_exporter_attach_mode" and value == "1":
            return labels
    return {}


def check_choice(what, want, text, lines):
    """The mode and read path in the self-metric and the log line, against
    `want` (a None is recorded, not checked). Returns the choice made."""
    metric, logged = attach_metric(text), attach_line(lines)
    chosen = (metric.get("mode"), metric.get("read_path"))
    detail = f"metric {metric or 'missing'}; log mode={logged.get('mode')} read_path={logged.get('read_path')}"
    for index, (key, wanted) in enumerate(zip(("mode", "read_path"), want)):
        got = (metric.get(key), logged.get(key))
        if wanted is None:
            emit(f"# {what}: {key} {got[0]} (log: {got[1]}; not checked)")
        else:
            check(got == (wanted, wanted), f"{what}: {key}={wanted} (self-metric and log line)", detail)
    emit(f"# {what}: reason=\"{logged.get('reason', '?')}\"")
    return chosen


def loaded_programs():
    return sorted(re.findall(r'"name":"(tcptop[^"]*)"', run("bpftool", "-j", "prog", "show").stdout))


def check_programs(what, expected):
    names = loaded_programs()
    if expected is None:
        check(names, f"{what}: programs loaded: " + " ".join(names))
    else:
        check(names == sorted(expected), f"{what}: only its programs are loaded: " + " ".join(names),
              f"expected {sorted(expected)}")


def traffic_checks(what, tag, seed):
    """Known bytes, both families, peeks, sendfile and a shared socket: exact."""
    t = time.monotonic()
    ends = []
    ends += exchange("4", f"g{tag}-cli-4a", f"g{tag}-srv-4a", 1, 123457, seed=seed)
    ends += exchange("4", f"g{tag}-cli-4b", f"g{tag}-srv-4b", 1000000, 1, seed=seed + 2, peek=True)
    ends += exchange("6", f"g{tag}-cli-6a", f"g{tag}-srv-6a", 65536, 3000001, seed=seed + 4)
    ends += exchange("6", f"g{tag}-cli-6b", f"g{tag}-srv-6b", 123457, 1, seed=seed + 6, peek=True)
    emit(f"# {what}: {len(ends) // 2} exchanges in {time.monotonic() - t:.1f} s")
    check_ends(scrape(), ends, f"{what}, exact bytes")
    sendfile_ends = sendfile_exchange(200000)
    check_ends(scrape(), sendfile_ends, f"{what}, sendfile")
    shared_ends = shared_exchange(300001, 4242)
    check_ends(scrape(), shared_ends, f"{what}, one socket, two processes")
    return ends


def blocked_receivers_check(what):
    """More threads blocked in recv() than kretprobe instances: their missed
    returns must show as unattributed events, none silently lost."""
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
          f"{what}, {count} threads blocked in recv(): {counted} bytes counted, {lost} missed returns "
          "counted as unattributed events, none silently lost", f"received {received}")


DAEMON = ["/usr/local/bin/tcptop-exporter", "--config.file=/etc/tcptop-exporter/tcptop-exporter.yml"]


def refusal_check(what, flags):
    """The daemon, outside systemd, on a kernel it may refuse: if it does,
    it exits 1 with one error line saying why and never says READY=1."""
    path = "/run/tcptop-guest-notify"
    if os.path.exists(path):
        os.unlink(path)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(path)
    daemon = subprocess.Popen(DAEMON + flags, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, NOTIFY_SOCKET=path))
    try:
        output, _ = daemon.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        daemon.kill()
        output, _ = daemon.communicate()
    notify.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(notify.recv(4096).decode(errors="replace"))
        except BlockingIOError:
            break
    notify.close()
    os.unlink(path)
    errors = [l for l in output.splitlines() if "level=error" in l]
    ready = any("READY=1" in m.split("\n") for m in messages)
    check(daemon.returncode == 1 and len(errors) == 1 and not ready,
          f"{what}: the daemon refuses this kernel cleanly: exit 1, one error line, never READY",
          f"exit {daemon.returncode}, READY={ready}, output: " + " | ".join(output.splitlines()[-4:]))
    for line in errors:
        emit(f"# {what}: {line}")
    if daemon.returncode != 0:
        # What libbpf and the verifier said: for the report, not checked.
        debug = run(*DAEMON, *flags, "--log.level=debug", timeout=120)
        for line in (debug.stdout + debug.stderr).splitlines()[-25:]:
            emit(f"#   debug: {line[:400]}")
    check("tcptop" not in run("bpftool", "prog", "show").stdout, f"{what}: no BPF program left behind")


def health_pass(what, health, seed):
    """TCP health over the delay line (EXPECT's health: True), or why this kernel cannot."""
    if health is True:
        guest_health.health_check(what, seed, check, emit, scrape, samples)
    else:
        emit(f"# {what}: no health check on this kernel: {health}")


def forced_pass(index, name, flags, want, programs, extras, health):
    """The daemon again, outside systemd, with `flags`: its choice against
    `want`, then the same exact-bytes and health checks."""
    what = f"pass {name} ({' '.join(flags)})"
    log_path = f"/tmp/daemon-{name}.log"
    log = open(log_path, "w")
    daemon = subprocess.Popen(DAEMON + flags, stdout=log, stderr=subprocess.STDOUT)
    text = None
    try:
        t = time.monotonic()
        while time.monotonic() - t < 120 and daemon.poll() is None:
            try:
                text = scrape()
                break
            except OSError:
                time.sleep(0.5)
        lines = open(log_path).read().splitlines()
        if not check(text is not None, f"{what}: the daemon serves /metrics ({time.monotonic() - t:.1f} s)",
                     " | ".join(lines[-4:])):
            return
        check_choice(what, want, text, lines)
        check_programs(what, programs)
        traffic_checks(what, chr(ord("a") + index), seed=21 + 10 * index)
        health_pass(what, health, seed=2 + index)
        if "blocked_receivers" in extras:
            blocked_receivers_check(what)
    finally:
        if daemon.poll() is None:
            daemon.terminate()
        try:
            status = daemon.wait(timeout=60)
            if text is not None:  # it served: it must also stop cleanly
                check(status == 0, f"{what}: the daemon stops cleanly", f"exit {status}")
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=30)
            check(False, f"{what}: the daemon stops cleanly", "killed")
        programs_left = run("bpftool", "prog", "show").stdout
        check("tcptop" not in programs_left, f"{what}: no BPF program left after stop",
              " ".join(l for l in programs_left.splitlines() if "tcptop" in l))


def function_arguments(raw, name):
    """Argument count of a kernel function in a raw BTF dump, or None."""
    function = re.search(rf"^\[\d+\] FUNC '{re.escape(name)}' type_id=(\d+)", raw, re.M)
    if not function:
        return None
    proto = re.search(rf"^\[{function.group(1)}\] FUNC_PROTO .*vlen=(\d+)", raw, re.M)
    return int(proto.group(1)) if proto else None


def kernel_checks(kernel, expect):
    """What this kernel offers, recorded and checked against the table."""
    release = os.uname().release
    has_btf = os.path.exists("/sys/kernel/btf/vmlinux")
    raw = run("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw", timeout=600).stdout \
        if has_btf else ""
    tracepoints = "'btf_trace_sock_send_length'" in raw and "'btf_trace_sock_recv_length'" in raw
    arguments = {f: function_arguments(raw, f) for f in ("tcp_sendmsg", "tcp_recvmsg", "tcp_sendpage")}
    emit(f"# kernel {release}: BTF {'yes' if has_btf else 'NO'}, sock_send_length/sock_recv_length tracepoints "
         f"{'yes' if tracepoints else 'no'}, arguments: "
         + ", ".join(f"{f} {'absent' if n is None else n}" for f, n in arguments.items()))
    check(release.startswith(expect["release"]) and has_btf, f"guest {kernel}: kernel {release} with BTF",
          f"expected {expect['release']}*")
    check(tracepoints == expect["tracepoints"],
          f"guest {kernel}: sock_send_length tracepoint {'present' if tracepoints else 'absent'}, as expected")
    check(arguments["tcp_recvmsg"] == expect["recvmsg_args"],
          f"guest {kernel}: tcp_recvmsg has {arguments['tcp_recvmsg']} arguments, as expected",
          f"expected {expect['recvmsg_args']}")


def install():
    """The shipped unit and config, as `make install` would put them."""
    os.makedirs("/usr/local/bin", exist_ok=True)
    shutil.copy(os.path.join(HERE, "tcptop-exporter"), "/usr/local/bin/tcptop-exporter")
    os.chmod("/usr/local/bin/tcptop-exporter", 0o755)
    os.makedirs("/etc/tcptop-exporter", exist_ok=True)
    shutil.copy(os.path.join(HERE, "tcptop-exporter.yml"), "/etc/tcptop-exporter/tcptop-exporter.yml")
    shutil.copy(os.path.join(HERE, "tcptop-exporter.service"), "/etc/systemd/system/tcptop-exporter.service")
    run("systemctl", "daemon-reload")


CAP_MASKS = {"none": "0000000000000000", "CAP_BPF": "0000008000000000"}


def caps_check(want, journal):
    """After attach the service keeps only what reading needs on this kernel
    (found by trying; `read_caps` says what we expect), in every thread."""
    pid = run("systemctl", "show", UNIT, "-p", "MainPID", "--value").stdout.strip()
    line = next((l for l in journal.splitlines() if 'msg="capabilities dropped"' in l), "")
    kept = re.search(r"kept=(\S+)", line)
    kept = kept.group(1) if kept else "?"
    values = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                for field in open(f"/proc/{pid}/task/{task}/status").read().splitlines():
                    if field.startswith(("CapEff:", "CapPrm:")):
                        values.add(field.split()[1])
            except OSError:
                pass  # a thread that ended
    except OSError:
        pass
    try:
        sysctl = open("/proc/sys/kernel/unprivileged_bpf_disabled").read().strip()
    except OSError:
        sysctl = "?"
    emit(f"# capabilities after attach: kept {kept}; CapEff/CapPrm of every thread: {' '.join(sorted(values))}; "
         f"kernel.unprivileged_bpf_disabled={sysctl}")
    check(kept == want and values == {CAP_MASKS.get(want)},
          f"after attach the service keeps {want} for reading, in every thread", f"{line} | {sorted(values)}")


def port_answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def unit_limits_check():
    """What the unit bounds, under this guest's systemd (cgroup v2): open
    files, memory, and the listen port: SocketBindAllow=tcp:9435 makes any
    other bind fail with EPERM where systemd is built with BPF_FRAMEWORK,
    and a reload to such a port keeps the running listener."""
    pid = run("systemctl", "show", UNIT, "-p", "MainPID", "--value").stdout.strip()
    limits = next((l.split() for l in open(f"/proc/{pid}/limits") if l.startswith("Max open files")), [])
    soft = int(limits[3]) if len(limits) > 4 else 0
    memory = run("systemctl", "show", UNIT, "-p", "MemoryCurrent", "--value").stdout.strip()
    peak = run("systemctl", "show", UNIT, "-p", "MemoryPeak", "--value").stdout.strip()
    limit = run("systemctl", "show", UNIT, "-p", "MemoryMax", "--value").stdout.strip()
    emit(f"# service memory (cgroup, BPF maps included): current {memory}, peak {peak}, MemoryMax {limit}; "
         f"open files {soft}")
    check(soft >= 16640, f"open files {soft}: room for web.max_connections 16384", " ".join(limits))
    check(memory.isdigit() and limit == "268435456" and int(memory) < int(limit),
          f"MemoryMax=256M applies; the service uses {int(memory) >> 20 if memory.isdigit() else '?'} MiB", memory)

    enforced = "+BPF_FRAMEWORK" in run("systemctl", "--version").stdout
    config = "/etc/tcptop-exporter/tcptop-exporter.yml"
    original = open(config).read()
    with open(config, "w") as f:
        f.write(original.replace('listen_addresses: [":9435"]', 'listen_addresses: [":9435", ":9436"]'))
    try:
        before = run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout.count("configuration reloaded")
        run("systemctl", "reload", UNIT)
        journal = ""
        for _ in range(50):
            journal = run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
            if "previous listeners keep serving" in journal or journal.count("configuration reloaded") > before:
                break
            time.sleep(0.1)
        refused = [l for l in journal.splitlines() if ":9436" in l and "previous listeners keep serving" in l]
        if enforced:
            check(refused and port_answers(9435) and not port_answers(9436),
                  "SocketBindAllow=: a reload adding :9436 is refused (EPERM), :9435 keeps serving",
                  " | ".join(journal.splitlines()[-3:]))
        else:
            emit("# SocketBindAllow= not enforced: this systemd is built without BPF_FRAMEWORK")
            check(port_answers(9435), "a reload adding :9436 keeps :9435 serving", " | ".join(journal.splitlines()[-3:]))
    finally:
        with open(config, "w") as f:
            f.write(original)
        run("systemctl", "reload", UNIT)


def unit_pass(expect):
    """auto, under systemd with the shipped unit. Returns seconds taken
    (start, traffic), or None where it did not serve."""
    t = time.monotonic()
    start = run("systemctl", "start", UNIT, timeout=180)
    start_seconds = time.monotonic() - t
    journal = run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
    if start.returncode != 0 and expect["may_refuse"]:
        emit("# auto: the daemon did not start under systemd: " + " | ".join(journal.splitlines()[-3:]))
        state = run("systemctl", "show", UNIT, "-p", "Result", "-p", "ExecMainStatus").stdout
        check("ExecMainStatus=1" in state, "auto: the unit failed with exit status 1", state)
        run("systemctl", "reset-failed", UNIT)
        refusal_check("auto", [])
        return None
    if not check(start.returncode == 0, f"systemctl start returns after READY ({start_seconds:.1f} s)",
                 start.stderr.strip() + " | " + " | ".join(journal.splitlines()[-3:])):
        return None
    state = run("systemctl", "show", UNIT, "-p", "ActiveState", "-p", "SubState", "-p", "StatusText").stdout
    check("ActiveState=active" in state and "SubState=running" in state, "the unit is active (running)", state)
    check("StatusText=Serving /metrics on" in state, "STATUS= says what it serves", state)
    text = scrape()
    check_choice("auto", expect["auto"], text, journal.splitlines())
    check_programs("auto", expect["programs"])
    caps_check(expect["read_caps"], journal)

    t = time.monotonic()
    ends = traffic_checks("auto", "t", seed=1)
    traffic_seconds = time.monotonic() - t
    health_pass("auto", expect["health"], seed=1)

    reload = run("systemctl", "reload", UNIT)
    time.sleep(1)
    state = run("systemctl", "show", UNIT, "-p", "ActiveState").stdout
    check(reload.returncode == 0 and "ActiveState=active" in state, "systemctl reload keeps it running",
          reload.stderr.strip() + state)
    journal = run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
    check('msg="configuration reloaded"' in journal, "the daemon re-read its configuration on reload",
          " | ".join(journal.splitlines()[-4:]))
    check_ends(scrape(), ends, "after reload")
    unit_limits_check()

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
    return start_seconds, traffic_seconds


def main():
    global out_file
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--kernel", help="the EXPECT entry (default: in/kernel, else from uname -r)")
    args = parser.parse_args()
    if args.out:
        out_file = open(args.out, "w")
    started = time.monotonic()
    kernel = args.kernel
    if not kernel and os.path.exists(os.path.join(HERE, "kernel")):
        kernel = open(os.path.join(HERE, "kernel")).read().strip()
    if not kernel:
        kernel = ".".join(os.uname().release.split(".")[:2])
    emit(f"# guest {kernel}: kernel {os.uname().release}, uptime {open('/proc/uptime').read().split()[0]} s")
    if not check(kernel in EXPECT, f"guest {kernel}: an expectation entry exists", f"known: {' '.join(EXPECT)}"):
        return 1
    expect = EXPECT[kernel]
    kernel_checks(kernel, expect)

    install()
    version = run("/usr/local/bin/tcptop-exporter", "--version")
    check(version.returncode == 0, "the static binary runs on Debian 12", version.stderr.strip())

    timings = []
    t = time.monotonic()
    seconds = unit_pass(expect)
    if seconds:
        timings.append(f"start {seconds[0]:.1f} s, traffic {seconds[1]:.1f} s")
    timings.append(f"auto pass {time.monotonic() - t:.1f} s")
    for index, (name, flags, want, programs, extras) in enumerate(expect["passes"]):
        t = time.monotonic()
        forced_pass(index, name, flags, want, programs, extras, expect["health"])
        timings.append(f"{name} pass {time.monotonic() - t:.1f} s")

    passed = sum(results)
    failed = len(results) - passed
    emit(f"# guest checks took {time.monotonic() - started:.1f} s ({', '.join(timings)})")
    emit(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # one line, so that the host sees why
        check(False, f"guest check crashed: {type(error).__name__}: {error}")
        emit(f"{sum(results)} passed, {len(results) - sum(results)} failed")
        sys.exit(1)
