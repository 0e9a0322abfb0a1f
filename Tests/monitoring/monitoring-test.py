#!/usr/bin/python3
"""The monitoring/ directory, checked with real promtool and real Prometheus servers.

  Tests/monitoring/monitoring-test.py            (root: the fleet part runs the daemon, which loads BPF)
  Tests/monitoring/monitoring-test.py --no-fleet (the promtool checks only; no root)

1. promtool check rules / test rules on monitoring/rules/, and that the tests
   cover every rule: each recording rule with expected values, each alert
   both firing and not firing.
2. The Grafana dashboard: every panel query and template-variable query,
   written as a recording rule and checked by promtool; every metric name in
   them, and in the rules, is a recorded name of our rules or a family the
   exporter serves (the per-unit view and the self metrics, never the
   per-connection view).
3. The fleet guide (monitoring/fleet/), with real parts: the daemon; a site
   Prometheus running monitoring/fleet/site-prometheus.yml (our rules, the
   host relabelling, remote write of the recorded series only); a central
   Prometheus receiving it (--web.enable-remote-write-receiver); and a
   second central one federating from the site (central-federate.yml). A
   client sends exactly 1,000,000 bytes to a server on loopback; both central
   servers must answer a fleet query by host with exactly those bytes, and
   every dashboard query must answer on each server.

Every wait is bounded; every process started here is stopped at exit.
Prints `ok - ...` / `not ok - ...` lines and `# figure:` lines; exit 1 on any failure.
"""
import atexit
import ctypes
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RULES = os.path.join(ROOT, "monitoring/rules/tcptop-exporter.rules.yml")
RULE_TESTS = os.path.join(ROOT, "monitoring/rules/tests")
DASHBOARD = os.path.join(ROOT, "monitoring/grafana/tcptop-exporter.json")
FLEET = os.path.join(ROOT, "monitoring/fleet")
EXPORTER = os.path.join(ROOT, ".build/debug/tcptop-exporter")
PEER = os.path.join(ROOT, "Tests/traffic_peer.py")
# The recorded names, as the fleet's write_relabel_configs keeps them.
RECORDED_NAME = re.compile(r"[a-z_]+:tcptop_[a-z0-9_]+:[a-z0-9_]+")

# The families the exporter serves that rules and dashboard may use: the
# per-unit view's (prefix tcptop_unit), the self metrics, and the series
# Prometheus itself adds to each scrape. Not the per-connection view (tcptop_).
UNIT_FAMILIES = {"tcptop_unit_" + name for name in (
    "sent_bytes_total", "received_bytes_total", "retransmitted_segments_total", "rtt_seconds",
    "connections_opened_total", "connections_established_total", "connect_failures_total",
    "connections_closed_total", "resets_total")}
SELF_FAMILIES = {
    "tcptop_unattributed_bytes_total", "tcptop_unattributed_retransmitted_segments_total",
    "tcptop_exporter_overflowed_label_sets", "tcptop_exporter_series", "tcptop_exporter_map_entries",
    "tcptop_exporter_map_capacity", "tcptop_exporter_scrapes_total",
    "tcptop_exporter_scrape_duration_seconds_total", "tcptop_exporter_kernel_read_errors_total",
    "tcptop_exporter_bpf_missed_runs_total", "tcptop_exporter_build_info"}
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds"}

passed = 0
failed = 0


def ok(what):
    global passed
    passed += 1
    print(f"ok - {what}", flush=True)


def not_ok(what, why):
    global failed
    failed += 1
    print(f"not ok - {what}: {why}", flush=True)


def check(condition, what, why=""):
    (ok(what) if condition else not_ok(what, why))
    return condition


def figure(text):
    print(f"# figure: {text}", flush=True)


def run(command, timeout=120):
    """(exit status, stdout + stderr) of a command, at most `timeout` seconds."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout} s"


# --- PromQL: the metric names an expression uses -------------------------------------------

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "start", "end"}


def metric_names(expr):
    """Metric names in a PromQL expression: identifiers that are not functions,
    aggregations, keywords, label names or parts of durations and numbers."""
    text = re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    names = set()
    if "__name__" in text:
        raise ValueError(f"a __name__ matcher in {expr!r}: name it directly")
    text = re.sub(r"\{[^}]*\}", " ", text)          # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)         # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1 ", text)
    # A name followed by "(" (or by "by"/"without" and then "(") is a function or aggregation.
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*(?:(?:by|without)\s*)?\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


# --- 1. the rules ----------------------------------------------------------------------------

def check_rules():
    status, out = run(["promtool", "check", "rules", RULES])
    found = re.search(r"SUCCESS: (\d+) rules found", out)
    check(status == 0 and found, "promtool check rules monitoring/rules/tcptop-exporter.rules.yml", out.strip())
    if found:
        figure(f"{found.group(1)} rules")
    tests = sorted(os.path.join(RULE_TESTS, name) for name in os.listdir(RULE_TESTS) if name.endswith(".yml"))
    status, out = run(["promtool", "test", "rules", *tests])
    check(status == 0 and out.count("SUCCESS") == len(tests),
          f"promtool test rules ({len(tests)} files)", out.strip()[-3000:])

    groups = yaml.safe_load(open(RULES))["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    records = [rule["record"] for rule in rules if "record" in rule]
    alerts = [rule for rule in rules if "alert" in rule]
    # What the test files cover.
    sampled, quiet, firing, cases = set(), set(), set(), 0
    for path in tests:
        for test in yaml.safe_load(open(path))["tests"]:
            for case in test.get("promql_expr_test", []):
                cases += 1
                if case["exp_samples"] and all("value" in sample for sample in case["exp_samples"]):
                    sampled.add(case["expr"].strip())
            for case in test.get("alert_rule_test", []):
                cases += 1
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    figure(f"{len(records)} recording rules, {len(alerts)} alerts, {cases} promtool test cases")
    missing = [name for name in records if name not in sampled]
    check(not missing, f"every recording rule ({len(records)}) has a test with expected values", f"untested: {missing}")
    names = [alert["alert"] for alert in alerts]
    check(all(name in firing for name in names) and all(name in quiet for name in names),
          f"every alert ({len(alerts)}) is tested firing and not firing",
          f"firing untested: {sorted(set(names) - firing)}, quiet untested: {sorted(set(names) - quiet)}")
    bad = [alert["alert"] for alert in alerts
           if not (alert.get("for") and alert.get("labels", {}).get("severity")
                   and alert.get("annotations", {}).get("summary") and alert.get("annotations", {}).get("description"))]
    check(not bad, "every alert has for:, a severity, a summary and a description", f"incomplete: {bad}")
    check(all(RECORDED_NAME.fullmatch(name) for name in records),
          "every recorded name is level:tcptop_metric:operations (what the fleet's remote write keeps)",
          str([name for name in records if not RECORDED_NAME.fullmatch(name)]))
    allowed = set(records) | UNIT_FAMILIES | SELF_FAMILIES | PROMETHEUS_SERIES
    used = set()
    for rule in rules:
        used |= metric_names(rule["expr"])
    check(used <= allowed, "the rules use only the per-unit view, the self metrics and their own records",
          f"unknown: {sorted(used - allowed)}")
    return set(records)


# --- 2. the dashboard ------------------------------------------------------------------------

def all_panels(panels):
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def substitute(expr):
    """Grafana's variables, replaced the way Grafana does with concrete values."""
    for variable, value in (("__rate_interval", "1m"), ("__interval", "1m"), ("__range", "1h"),
                            ("__range_s", "3600"), ("instance", ".*"), ("unit", ".*"), ("datasource", "prometheus")):
        expr = expr.replace("${" + variable + "}", value)
        expr = re.sub(r"\$" + variable + r"\b", value, expr)
    return expr


def dashboard_queries():
    """(where, PromQL) for every panel target and query variable."""
    dashboard = json.load(open(DASHBOARD))
    queries = []
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r} {target['refId']}", substitute(target["expr"])))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query) or re.fullmatch(r"\s*query_result\((.*)\)\s*", query)
        if not match:
            raise ValueError(f"variable {variable['name']}: a query this test cannot read: {query}")
        queries.append((f"variable ${variable['name']}", substitute(match.group(1))))
    return dashboard, queries


def check_dashboard(records, work):
    dashboard, queries = dashboard_queries()
    panels = [panel for panel in all_panels(dashboard["panels"]) if panel["type"] != "row"]
    figure(f"dashboard: {len(panels)} panels, {len(queries)} queries")
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    check(dashboard.get("schemaVersion", 0) >= 39 and variables.get("datasource", {}).get("type") == "datasource"
          and {"instance", "unit"} <= set(variables)
          and all(panel.get("datasource", {}).get("uid") == "${datasource}" for panel in panels),
          "dashboard: schemaVersion 39, a datasource variable every panel uses, variables instance and unit")
    boxes = [(panel["title"], panel["gridPos"]) for panel in all_panels(dashboard["panels"])]
    overlaps = [(a, b) for i, (a, p) in enumerate(boxes) for b, q in boxes[i + 1:]
                if p["x"] < q["x"] + q["w"] and q["x"] < p["x"] + p["w"] and p["y"] < q["y"] + q["h"] and q["y"] < p["y"] + p["h"]]
    check(not overlaps and all(box["x"] + box["w"] <= 24 for _, box in boxes),
          "dashboard: panels fit the 24-column grid without overlapping", str(overlaps))
    # Each query as a recording rule, for promtool to parse.
    path = os.path.join(work, "dashboard-queries.rules.yml")
    with open(path, "w") as out:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}:check", "expr": expr} for i, (_, expr) in enumerate(queries)]}]}, out)
    status, text = run(["promtool", "check", "rules", path])
    check(status == 0, f"every dashboard query ({len(queries)}) parses (promtool check rules)", text.strip())
    allowed = records | UNIT_FAMILIES | SELF_FAMILIES | PROMETHEUS_SERIES
    unknown = {where: sorted(metric_names(expr) - allowed) for where, expr in queries if metric_names(expr) - allowed}
    check(not unknown, "every metric name in the dashboard is a recorded name of our rules or an exporter family",
          str(unknown))
    used = set().union(*(metric_names(expr) for _, expr in queries))
    check(used <= records, "the dashboard uses recorded series only (so the central store can serve all of it)",
          str(sorted(used - records)))
    return queries


# --- 3. the fleet ----------------------------------------------------------------------------

children = []
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """In the child before exec: SIGTERM when this test dies, even by SIGKILL (no atexit then)."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def stop_children():
    for child, _ in reversed(children):
        if child.poll() is None:
            child.terminate()
    for child, _ in reversed(children):
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)


def start(name, command, log_dir):
    log = open(os.path.join(log_dir, f"{name}.log"), "w")
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             preexec_fn=die_with_parent)
    children.append((child, name))
    return child


def log_tail(log_dir, name, lines=15):
    try:
        return "".join(open(os.path.join(log_dir, f"{name}.log")).readlines()[-lines:])
    except OSError:
        return ""


ports_taken = set()


def free_port():
    """A port free on 127.0.0.1 and ::1 alike (the exporter listens on both), not given before."""
    for _ in range(50):
        port = random.randint(20000, 60000)
        if port in ports_taken:
            continue
        ports_taken.add(port)
        try:
            with socket.socket(socket.AF_INET) as v4, socket.socket(socket.AF_INET6) as v6:
                v4.bind(("127.0.0.1", port))
                v6.bind(("::1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port found")


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def query(port, expr):
    """The result of an instant query on the Prometheus at 127.0.0.1:port (a list of series)."""
    status, body = http_get(f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    answer = json.loads(body)
    if answer.get("status") != "success":
        raise RuntimeError(f"query {expr!r}: {body}")
    return answer["data"]["result"]


def wait_until(predicate, timeout, step=0.5):
    """Calls predicate() until it returns a true value or `timeout` seconds pass
    (at least once); (value, seconds)."""
    started = time.monotonic()
    while True:
        try:
            value = predicate()
        except (OSError, RuntimeError, ValueError):
            value = None
        if value or time.monotonic() - started >= timeout:
            return value or None, time.monotonic() - started
        time.sleep(step)


def fleet_config(name, replacements, work):
    """A shipped fleet file with its example values replaced; each must be there."""
    text = open(os.path.join(FLEET, name)).read()
    for old, new in replacements:
        if old not in text:
            raise RuntimeError(f"monitoring/fleet/{name} no longer has {old!r}: update this test with it")
        text = text.replace(old, new)
    path = os.path.join(work, name)
    with open(path, "w") as out:
        out.write(text)
    return path


# Hand-made cgroups named like units, for the peers: the shipped view's unit label.
cgroups = []


def unit_cgroup(name):
    """A cgroup named NAME (like "x.service") under the cgroup v2 mount; removed at exit."""
    mount = next(line.split()[4] for line in open("/proc/self/mountinfo")
                 if line.split()[line.split().index("-") + 1] == "cgroup2")
    path = os.path.join(mount, f"tcptop-fleet-{os.getpid()}", name)
    os.makedirs(path, exist_ok=True)
    cgroups.extend([path, os.path.dirname(path)])
    return path


def remove_cgroups():
    for path in cgroups:
        try:
            os.rmdir(path)
        except OSError:
            pass


def in_cgroup(path):
    """A preexec_fn: the child joins cgroup PATH before it runs, and dies with its parent."""
    def join():
        with open(os.path.join(path, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
        die_with_parent()
    return join


def peer(arguments, log_dir, name, cgroup):
    """Starts traffic_peer.py in CGROUP; returns (process, the port of its READY line)."""
    child = subprocess.Popen([sys.executable, PEER, *arguments, "--timeout", "30", "--deadline", "60"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(os.path.join(log_dir, f"{name}.log"), "w"),
                             text=True, preexec_fn=in_cgroup(cgroup))
    children.append((child, name))
    line = child.stdout.readline()
    match = re.match(r"READY pid=\d+ port=(\d+)", line)
    if not match:
        raise RuntimeError(f"{name}: no READY line (got {line!r}): {log_tail(log_dir, name)}")
    return child, int(match.group(1))


def sample_by_host(port, expr):
    return {series["metric"].get("host"): float(series["value"][1]) for series in query(port, expr)}


def check_fleet(records, queries, work):
    if os.geteuid() != 0:
        not_ok("fleet", "needs root (the daemon loads BPF programs)")
        return
    if not os.access(EXPORTER, os.X_OK):
        not_ok("fleet", f"{EXPORTER} is missing: run `swift build` first")
        return
    exporter_port, site_port, central_port, federate_port = free_port(), free_port(), free_port(), free_port()
    run_id = random.randint(1000, 9999)
    # The peers' units: hand-made cgroups with unit names, unique per run.
    client, server, prober = f"tfc-{run_id}.service", f"tfs-{run_id}.service", f"tfp-{run_id}.service"
    # The shipped config (its tcptop_unit view is what the rules are built on), on ports of the test's.
    exporter_config = os.path.join(ROOT, "Config", "tcptop-exporter.yml")
    targets = os.path.join(work, "targets.yml")
    with open(targets, "w") as out:
        out.write(f"- targets: ['localhost:{exporter_port}']\n")
    site = fleet_config("site-prometheus.yml", [
        ("scrape_interval: 15s", "scrape_interval: 1s"), ("evaluation_interval: 15s", "evaluation_interval: 1s"),
        ("/etc/prometheus/rules/tcptop-exporter.rules.yml", RULES),
        ("/etc/prometheus/file_sd/tcptop-exporter.yml", targets),
        ("http://central.example.net:9090/api/v1/write", f"http://127.0.0.1:{central_port}/api/v1/write"),
    ], work)
    # The samples reach the central store within the remote write's batch deadline (5 s by default): 1 s here.
    with open(site, "a") as out:
        out.write("    queue_config:\n      batch_send_deadline: 1s\n")
    central = fleet_config("central-prometheus.yml", [("evaluation_interval: 15s", "evaluation_interval: 1s")], work)
    federate = fleet_config("central-federate.yml", [
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("          - prometheus-dc1.example.net:9090\n          - prometheus-dc2.example.net:9090\n",
         f"          - 127.0.0.1:{site_port}\n"),
    ], work)
    for path in (site, central, federate):
        status, text = run(["promtool", "check", "config", path])
        check(status == 0, f"promtool check config {os.path.basename(path)}", text.strip())

    def prometheus(name, config, port, *flags):
        return start(name, ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work}/{name}-data",
                            f"--web.listen-address=127.0.0.1:{port}", *flags], work)

    started = time.monotonic()
    start("exporter", [EXPORTER, f"--config.file={exporter_config}", f"--web.listen-address=127.0.0.1:{exporter_port}",
                       f"--web.listen-address=[::1]:{exporter_port}"], work)
    prometheus("central", central, central_port, "--web.enable-remote-write-receiver")
    prometheus("federate", federate, federate_port)
    # Stopped, it would try for a minute to flush to a central server already gone.
    prometheus("site", site, site_port, "--storage.remote.flush-deadline=1s")
    up, _ = wait_until(lambda: "tcptop_exporter_build_info" in http_get(
        f"http://127.0.0.1:{exporter_port}/metrics")[1], 30)
    if not check(up, "the daemon serves /metrics", log_tail(work, "exporter")):
        return
    for name, port in (("central", central_port), ("federate", federate_port), ("site", site_port)):
        ready, _ = wait_until(lambda: http_get(f"http://127.0.0.1:{port}/-/ready")[0] == 200, 30)
        if not check(ready, f"the {name} Prometheus is ready", log_tail(work, name)):
            return
    figure(f"fleet: daemon and three Prometheus servers ready in {time.monotonic() - started:.1f} s")
    # The site scrapes the daemon, with the host label from the relabelling.
    scraped, _ = wait_until(lambda: query(site_port, 'up{job="tcptop-exporter"} == 1'), 30)
    check(scraped and scraped[0]["metric"].get("host") == "localhost"
          and scraped[0]["metric"].get("instance") == f"localhost:{exporter_port}",
          "the site scrapes the daemon; the relabelling sets host=\"localhost\" from localhost:<port>", str(scraped))

    # Exactly 1,000,000 bytes from a client to a server, and 4321 back.
    sent, answered = 1_000_000, 4321
    traffic_started = time.monotonic()
    server_process, server_port = peer(["serve", "--name", "tfs", "--receive", str(sent), "--send", str(answered)], work, "server",
                                       unit_cgroup(server))
    client_process, _ = peer(["connect", "--name", "tfc", "--port", str(server_port), "--send", str(sent),
                              "--receive", str(answered)], work, "client", unit_cgroup(client))
    for process, name in ((server_process, "server"), (client_process, "client")):
        try:
            done = process.stdout.read() if process.wait(timeout=30) == 0 else ""
        except subprocess.TimeoutExpired:
            done = ""
        check("DONE" in done, f"the {name} moved its bytes", log_tail(work, name))
    traffic_done = time.monotonic()

    # The fleet query: bytes per host from the recorded served totals.
    expected = {f'sum by (host) (instance_unit:tcptop_unit_sent_bytes:sum{{unit="{client}"}})': sent,
                f'sum by (host) (instance_unit:tcptop_unit_received_bytes:sum{{unit="{server}"}})': sent,
                f'sum by (host) (instance_unit:tcptop_unit_sent_bytes:sum{{unit="{server}"}})': answered,
                f'sum by (host) (instance_unit:tcptop_unit_received_bytes:sum{{unit="{client}"}})': answered}
    for name, port in (("site", site_port), ("central", central_port), ("federate", federate_port)):
        deadline = time.monotonic() + 60  # for all four answers of this server
        for expr, bytes_moved in expected.items():
            got, seconds = wait_until(lambda: sample_by_host(port, expr) == {"localhost": bytes_moved},
                                      max(0.0, deadline - time.monotonic()))
            check(got, f"{name}: {expr} = {{host=\"localhost\"}} {bytes_moved}",
                  f"after {seconds:.0f} s: {sample_by_host(port, expr)}")
        figure(f"fleet: {name} answers the exact bytes {time.monotonic() - traffic_done:.1f} s after the traffic ended")
    # Two refused connects, 2.5 s apart: a counter's first sample is no increase
    # to rate(), so only the second one shows in the :rate5m records.
    closed_port = free_port()
    refused = 0
    for attempt in range(2):
        time.sleep(2.5 * attempt)
        probe = subprocess.run([sys.executable, PEER, "probe", "--name", "tfp", "--address", "127.0.0.1",
                                "--port", str(closed_port), "--timeout", "10", "--deadline", "20"],
                               capture_output=True, text=True, timeout=30, preexec_fn=in_cgroup(unit_cgroup(prober)))
        refused += "CONNECT result=ECONNREFUSED" in probe.stdout
    check(refused == 2, "two connects to a closed port were refused", probe.stdout + probe.stderr)
    labels = query(central_port, f'instance_unit:tcptop_unit_sent_bytes:sum{{unit="{client}"}}')
    check(labels and labels[0]["metric"].get("site") == "dc1" and labels[0]["metric"].get("job") == "tcptop-exporter",
          "central: the series carry the site's external label site=\"dc1\" and job", str(labels))
    rate, _ = wait_until(lambda: query(central_port, f'instance_unit:tcptop_unit_connect_failures:rate5m{{unit="{prober}"}} > 0'), 30)
    check(rate, "central: the second refused connect shows in instance_unit:tcptop_unit_connect_failures:rate5m", str(rate))
    # Remote write kept the recorded series only.
    def central_names():
        return {series["metric"]["__name__"] for series in query(central_port, 'count by (__name__) ({__name__=~".+"})')}
    wait_until(lambda: central_names() >= records, 30)
    names = central_names()
    check(names and all(RECORDED_NAME.fullmatch(name) for name in names),
          f"central: only recorded series arrived ({len(names)} names)", str(sorted(names)))
    check(names == records, f"central: every recorded name arrived ({len(records)})", f"missing: {sorted(records - names)}")
    # Every dashboard query answers on each server (the recorded series of the last 5 minutes).
    for name, port in (("site", site_port), ("central", central_port), ("federate", federate_port)):
        answered_all, _ = wait_until(lambda: all(query(port, expr) for _, expr in queries), 30)
        empty = [] if answered_all else [where for where, expr in queries if not query(port, expr)]
        check(not empty, f"{name}: every dashboard query ({len(queries)}) answers", f"empty: {empty}")
    figure(f"fleet: {time.monotonic() - started:.1f} s from start to the last check "
           f"(the 1,000,000 bytes took {traffic_done - traffic_started:.1f} s)")


def main():
    fleet = "--no-fleet" not in sys.argv[1:]
    work = tempfile.mkdtemp(prefix="tcptop-monitoring-")
    atexit.register(lambda: subprocess.run(["rm", "-rf", work]))
    atexit.register(remove_cgroups)  # after the children are stopped (atexit runs last-in first)
    atexit.register(stop_children)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(1))
    records = check_rules()
    queries = check_dashboard(records, work)
    if fleet:
        try:
            check_fleet(records, queries, work)
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as error:
            not_ok("fleet", str(error))
    print(f"# {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
