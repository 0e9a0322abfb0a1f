"""TCP health inside a guest, over the delay line (Tests/tools/delayline.c,
built statically on the host, and delayline-netns.sh): two network
namespaces 40 ms apart each way, 3% of the client's data segments dropped.
A client sends 1 MiB to a server, both hold the connection open; the
daemon's /metrics must show the client's tcptop_retransmitted_segments_total
equal to the kernel's own tcpi_total_retrans (TCP_INFO), its tcptop_rtt_seconds
within 10% of tcpi_rtt, and the server's retransmits 0; after both closed,
the counts again. guest_check.py calls health_check() in each run of the
daemon (its check/emit/scrape/samples passed in).

What the guest lacks (the TUN module, network namespaces) fails the check
with a one-line reason. Every wait is bounded, and all of one run's by
BUDGET; the peers' own --timeout and --deadline bound them too. Once a run
could not be made, later runs say so instead of waiting again.
"""
import os
import select
import shutil
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "traffic_peer.py")
DELAYLINE = os.path.join(HERE, "delayline")
NETNS = os.path.join(HERE, "delayline-netns.sh")
CLIENT_ADDRESS, SERVER_ADDRESS = "10.77.0.1", "10.77.0.2"
SIZE = 1 << 20
# The wire of the host's HealthTests: the measured conditions.
WIRE = ["--delay-ms", "40", "--drop-percent", "3", "--drop-match", "data", "--drop-side", "a"]
# Seconds one run's waits may take in all: a run takes 8-14 s in the 6.12 guest under TCG.
BUDGET = 120
# Why an earlier run could not be made, if one could not.
broken = None


class HealthError(Exception):
    """Why the check could not be made, in one line."""


class Child:
    """A child process whose stdout lines are each waited for at most a timeout."""

    def __init__(self, label, argv, deadline):
        self.label = label
        self.deadline = deadline
        self.errors = tempfile.TemporaryFile()
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.errors, bufsize=0)
        self.buffer = b""
        self.seen = []

    def line(self, prefix, timeout):
        """The next line starting with `prefix`, or HealthError with what came instead."""
        deadline = min(time.monotonic() + timeout, self.deadline)
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode(errors="replace").strip()
                self.seen.append(text)
                if text.startswith(prefix):
                    return text
            left = deadline - time.monotonic()
            readable = select.select([self.process.stdout], [], [], left)[0] if left > 0 else []
            chunk = os.read(self.process.stdout.fileno(), 4096) if readable else b""
            if not chunk:
                ended = "no line in time:" if not readable else "it ended before"
                raise HealthError(f"{self.label}: {ended} {prefix}; said {self.seen[-3:]}, "
                                  f"stderr: {self.stderr()}")
            self.buffer += chunk

    def stderr(self):
        self.errors.seek(0)
        return " | ".join(self.errors.read().decode(errors="replace").strip().splitlines()[-3:]) or "nothing"

    def say(self, text):
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def fields(line):
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


def tun_device():
    """Loads the TUN module where /dev/net/tun is missing; HealthError if it stays missing."""
    if os.path.exists("/dev/net/tun"):
        return
    probe = subprocess.run(["modprobe", "tun"], capture_output=True, text=True, timeout=30)
    deadline = time.monotonic() + 5  # devtmpfs makes the node as the module registers
    while not os.path.exists("/dev/net/tun") and time.monotonic() < deadline:
        time.sleep(0.1)
    if not os.path.exists("/dev/net/tun"):
        raise HealthError(f"no /dev/net/tun, and `modprobe tun` did not make it (exit {probe.returncode}: "
                          f"{probe.stderr.strip() or 'nothing said'})")


def peer(label, namespace, args, deadline):
    ip = shutil.which("ip") or "/sbin/ip"
    return Child(label, [ip, "netns", "exec", namespace, "/usr/bin/python3", PEER] + args
                 + ["--timeout", "60", "--deadline", str(BUDGET + 30)], deadline)


def series(parsed, name, pid):
    return [(labels, value) for family, labels, value in parsed if family == name and labels.get("pid") == str(pid)]


def check_ends(check, parsed, what, when, client, server, kernel_retransmits, kernel_rtt):
    """The client's and the server's health series against the kernel's figures."""
    client_pid, client_comm = client
    server_pid, server_comm = server
    counted = series(parsed, "tcptop_retransmitted_segments_total", client_pid)
    shown = [value for labels, value in counted if labels.get("comm") == client_comm]
    check(len(counted) == 1 and shown == [str(kernel_retransmits)],
          f"{what}, health {when}: the client's tcptop_retransmitted_segments_total "
          f"{shown[0] if shown else '?'} = the kernel's tcpi_total_retrans {kernel_retransmits}", f"series {counted}")
    counted = series(parsed, "tcptop_retransmitted_segments_total", server_pid)
    check(len(counted) == 1 and counted[0][0].get("comm") == server_comm and counted[0][1] == "0",
          f"{what}, health {when}: the server's tcptop_retransmitted_segments_total 0 (only client data dropped)",
          f"series {counted}")
    if kernel_rtt is None:
        return
    rtt = series(parsed, "tcptop_rtt_seconds", client_pid)
    seconds = float(rtt[0][1]) if len(rtt) == 1 else None
    within = seconds is not None and abs(seconds * 1e6 - kernel_rtt) <= 0.1 * kernel_rtt
    check(within, f"{what}, health {when}: the client's tcptop_rtt_seconds "
          f"{'?' if seconds is None else f'{seconds * 1e3:.1f} ms'} within 10% of tcpi_rtt {kernel_rtt / 1e3:.1f} ms",
          f"series {rtt}")


def sockets_gone(namespaces, timeout):
    """Waits until no TCP socket but TIME-WAIT ones is left in the namespaces
    (the kernel destroyed both ends); returns what is left."""
    ip = shutil.which("ip") or "/sbin/ip"
    deadline = time.monotonic() + timeout
    while True:
        left = [line for ns in namespaces for line in subprocess.run(
            [ip, "netns", "exec", ns, "ss", "-Htan", "exclude", "time-wait"],
            capture_output=True, text=True, timeout=10).stdout.splitlines()]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def health_check(what, seed, check, emit, scrape, samples):
    """The delay line up, a transfer held open, the daemon scraped; see the module's doc."""
    global broken
    if broken:
        check(False, f"{what}, health over the delay line",
              f"not tried again: an earlier run could not be made ({broken})")
        return
    name = f"gh{seed}"
    namespaces = [f"{name}-a", f"{name}-b"]
    children = []
    made = False
    t = time.monotonic()
    deadline = t + BUDGET
    try:
        tun_device()
        up = subprocess.run(["/bin/bash", NETNS, "up", name], capture_output=True, text=True, timeout=30)
        if up.returncode != 0:
            raise HealthError(f"network namespaces: {up.stderr.strip() or f'exit {up.returncode}'}")
        made = True
        line = Child("delayline", [DELAYLINE, "--ns-a", namespaces[0], "--ns-b", namespaces[1],
                                   "--seconds", str(BUDGET + 30), "--seed", str(seed)] + WIRE, deadline)
        children.append(line)
        line.line("READY", 15)
        server = peer("server", namespaces[1], ["serve", "--name", f"{name}-srv", "--address", SERVER_ADDRESS,
                                      "--receive", str(SIZE), "--send", "1", "--hold"], deadline)
        children.append(server)
        server_pid, port = (int(v) for v in map(fields(server.line("READY", 30)).get, ("pid", "port")))
        client = peer("client", namespaces[0], ["connect", "--name", f"{name}-cli", "--address", SERVER_ADDRESS,
                                      "--port", str(port), "--send", str(SIZE), "--receive", "1", "--tcp-info",
                                      "--hold"], deadline)
        children.append(client)
        client_pid = int(fields(client.line("READY", 30))["pid"])
        # Printed once the server's byte came back: every client segment was
        # acknowledged by then, so the kernel's count is final.
        info = fields(client.line("TCPINFO", BUDGET))
        client.line("HOLDING", 10)
        server.line("HOLDING", 10)
        retransmits, rtt = int(info["total_retrans"]), int(info["rtt_us"])
        transfer = time.monotonic() - t
        ends = ((client_pid, f"{name}-cli"), (server_pid, f"{name}-srv"))
        check(retransmits > 0, f"{what}, health: 3% of the client's data dropped, the kernel retransmitted "
              f"{retransmits} segments (tcpi_rtt {rtt / 1e3:.1f} ms, {transfer:.1f} s)")
        check_ends(check, samples(scrape()), what, "while open", *ends, retransmits, rtt)

        client.say("\n")
        server.say("\n")
        client.line("DONE", 30)
        server.line("DONE", 30)
        left = sockets_gone(namespaces, max(1, min(15, deadline - time.monotonic())))
        if left:
            raise HealthError(f"sockets still open after both peers closed: {left}")
        check_ends(check, samples(scrape()), what, "after close", *ends, retransmits, None)
        line.process.terminate()
        stats = fields(line.line("STATS", 10))
        emit(f"# {what}, health: {retransmits} retransmits for {stats.get('dropped_ab')} drops "
             f"(forwarded {stats.get('forwarded_ab')}/{stats.get('forwarded_ba')}, overflow {stats.get('overflow')}), "
             f"tcpi_rtt {rtt} us, {time.monotonic() - t:.1f} s")
    except (HealthError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as error:
        broken = f"{type(error).__name__}: {error}"
        check(False, f"{what}, health over the delay line", broken)
    finally:
        for child in reversed(children):
            child.stop()
        if made:
            subprocess.run(["/bin/bash", NETNS, "down", name], capture_output=True, timeout=30)
