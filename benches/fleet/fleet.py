#!/usr/bin/env python3
"""Fleet harness for relsync's LAN peers: a flash crowd.

N nodes all hold release v1 and run `relsync serve` (a full mesh of --peer links, no mDNS)
against an origin served by nginx. v2 is published at once (the channel pointer renamed into
place last) and every node updates, sharing chunks peer to peer, so the origin should serve
each byte about once. Measured: the origin's egress (nginx access log), each node's time from
the publish to its `update` event, its bytes from origin and peers, its upload; compared with
one node updating alone from the origin (the baseline). Every node's tree is diffed with v2.

  --mode loopback  nodes on 127.0.0.(10+k), nginx on 127.0.0.1, no shaping (CI)
  --mode netns     each node in its own network namespace, veths to a bridge in a hub
                   namespace, nginx in an origin namespace, tbf shaping on every link

Standard library only. Needs root for netns mode. See README.md next to this file.
"""
import argparse
import filecmp
import json
import os
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1 << 20
STARTED = time.monotonic()
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUBNET = "10.77"  # netns mode: origin 10.77.0.1, node k 10.77.1.k (/16 on the bridge)
NGINX_PORT = 8080
PEER_PORT = 4001


def log(msg: str) -> None:
    print(f"[fleet {time.monotonic() - STARTED:6.1f}s] {msg}", file=sys.stderr, flush=True)


class FleetError(Exception):
    """The run could not complete."""


class Timeout(FleetError):
    """The whole run took longer than --timeout."""


# ---------------------------------------------------------------------------------------------
# Bounded commands and cleanup


class Run:
    """Deadline for the whole run, and cleanup actions run in reverse order at the end."""

    def __init__(self, timeout: float):
        self.deadline = time.monotonic() + timeout
        self.actions: list = []

    def remaining(self, cap: float | None = None) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Timeout("the run took longer than --timeout")
        return left if cap is None else min(left, cap)

    def on_exit(self, desc: str, fn) -> None:
        self.actions.append((desc, fn))

    def cleanup(self) -> None:
        while self.actions:
            desc, fn = self.actions.pop()
            try:
                fn()
            except Exception as e:  # keep cleaning up
                log(f"cleanup: {desc}: {e}")


RUN: Run  # set in main


def sh(cmd: list, *, cap: float = 300, check: bool = True, quiet: bool = False,
       env: dict | None = None, cleanup: bool = False) -> subprocess.CompletedProcess:
    """Runs cmd to completion within the run's deadline (and at most cap seconds); cleanup
    commands get cap seconds even past the deadline."""
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                           timeout=cap if cleanup else RUN.remaining(cap), env=env,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FleetError(f"timed out: {' '.join(map(str, cmd))}")
    if check and p.returncode != 0:
        raise FleetError(f"exit {p.returncode}: {' '.join(map(str, cmd))}\n"
                         f"{p.stdout[-2000:]}{p.stderr[-4000:]}")
    if not quiet and p.returncode != 0:
        log(f"exit {p.returncode}: {' '.join(map(str, cmd))}: {p.stderr.strip()[-500:]}")
    return p


RUST_LOG = None  # --rust-log: for the daemons only


def child_env(daemon: bool = False) -> dict:
    env = dict(os.environ)
    env.pop("RUST_LOG", None)
    env.pop("RELSYNC_NO_MDNS", None)
    if daemon and RUST_LOG:
        env["RUST_LOG"] = RUST_LOG
    return env


def killpg(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


class Daemon:
    """A `relsync serve` process: stdout lines, timestamped on arrival, in a queue."""

    def __init__(self, name: str, cmd: list, logdir: str):
        self.name = name
        self.stderr_path = os.path.join(logdir, f"{name}.stderr")
        self.stdout_path = os.path.join(logdir, f"{name}.stdout")
        self.lines: queue.Queue = queue.Queue()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                                         stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=child_env(True))
        RUN.on_exit(f"stop {name}", self.kill)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with open(self.stdout_path, "w") as out:
            for raw in self.proc.stdout:
                t = time.monotonic()
                line = raw.decode(errors="replace").rstrip("\n")
                out.write(f"{t - STARTED:.3f} {line}\n")
                out.flush()
                self.lines.put((t, line))
        self.lines.put((time.monotonic(), None))

    def get(self, timeout: float):
        """(arrival time, line), line None at EOF; raises queue.Empty after timeout."""
        return self.lines.get(timeout=max(timeout, 0))

    def terminate(self) -> None:
        killpg(self.proc, signal.SIGTERM)

    def kill(self) -> None:
        killpg(self.proc, signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


# ---------------------------------------------------------------------------------------------
# Releases


def make_releases(root: str, release_mib: float, delta_mib: float, seed: int) -> dict:
    """v1: ~release_mib MiB of random bytes over 16 files; v2: ~delta_mib MiB of them new."""
    rng = random.Random(seed)
    total = int(release_mib * MIB)
    weights = [rng.uniform(0.5, 1.5) for _ in range(16)]
    sizes = [max(1, int(total * w / sum(weights))) for w in weights]
    names = [f"{'lib' if i % 3 else 'bin'}/part-{i:02d}.dat" for i in range(len(sizes))]
    v1 = {n: rng.randbytes(s) for n, s in zip(names, sizes)}
    v2 = dict(v1)
    budget, changed, whole = int(delta_mib * MIB), 0, []
    order = list(names)
    rng.shuffle(order)
    region = None
    for name in order:
        left = budget - changed
        if left <= 0:
            break
        if len(v1[name]) <= left:
            v2[name] = rng.randbytes(len(v1[name]))
            changed += len(v1[name])
            whole.append(name)
        else:  # a region of this file, and done
            start = rng.randrange(0, len(v1[name]) - left + 1)
            data = bytearray(v1[name])
            data[start:start + left] = rng.randbytes(left)
            v2[name] = bytes(data)
            changed += left
            region = (name, start, left)
            break
    for version, files in (("v1", v1), ("v2", v2)):
        for name, data in files.items():
            path = os.path.join(root, version, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    return {"v1": os.path.join(root, "v1"), "v2": os.path.join(root, "v2"),
            "files": len(names), "v1_bytes": sum(sizes), "changed_bytes": changed,
            "rewritten_files": whole, "changed_region": region}


def tree_diff(a: str, b: str) -> list:
    """Differences between trees a and b (paths, sizes, bytes); [] when identical."""
    def walk(root):
        out = {}
        for d, _, files in os.walk(root):
            for f in files:
                p = os.path.join(d, f)
                out[os.path.relpath(p, root)] = p
        return out
    fa, fb = walk(a), walk(b)
    diffs = [f"only in {a}: {p}" for p in sorted(fa.keys() - fb.keys())]
    diffs += [f"only in {b}: {p}" for p in sorted(fb.keys() - fa.keys())]
    for p in sorted(fa.keys() & fb.keys()):
        if not filecmp.cmp(fa[p], fb[p], shallow=False):
            diffs.append(f"differs: {p}")
    return diffs


def publish_atomically(staging: str, origin: str) -> float:
    """Copies what staging has new or changed into origin, channel pointers last, each by
    rename. Returns t0: the moment just before the first pointer rename."""
    files = []
    for d, _, names in os.walk(staging):
        for n in names:
            files.append(os.path.relpath(os.path.join(d, n), staging))
    pointers = sorted(f for f in files if f.split(os.sep)[0] == "channels")
    others = sorted(f for f in files if f.split(os.sep)[0] != "channels")

    def stage(rel):
        src, dst = os.path.join(staging, rel), os.path.join(origin, rel)
        if os.path.exists(dst) and filecmp.cmp(src, dst, shallow=False):
            return None
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = os.path.join(os.path.dirname(dst), f".fleet-tmp-{os.path.basename(dst)}")
        shutil.copy2(src, tmp)
        os.chmod(tmp, 0o644)
        return tmp, dst

    for rel in others:
        if (job := stage(rel)):
            os.replace(*job)
    jobs = [j for j in map(stage, pointers) if j]
    if not jobs:
        raise FleetError("publishing v2 changed no channel pointer")
    t0 = time.monotonic()
    for job in jobs:
        os.replace(*job)
    return t0


# ---------------------------------------------------------------------------------------------
# nginx and its access log

LOG_LINE = re.compile(r'^(\d{3}) (\d+) "(\S+) (\S+)[^"]*" "([^"]*)"')


def start_nginx(workdir: str, root: str, listen: str, netns: str | None) -> str:
    """nginx serving root on listen (IP:PORT), as scripts/nginx-origin.sh does. Returns the
    access log path."""
    os.makedirs(os.path.join(workdir, "tmp"), exist_ok=True)
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon on;
worker_processes 1;
user root root;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 1024; }}
http {{
  log_format bytes '$status $body_bytes_sent "$request" "$http_range"';
  access_log {workdir}/access.log bytes;
  client_body_temp_path {workdir}/tmp; proxy_temp_path {workdir}/tmp;
  fastcgi_temp_path {workdir}/tmp; uwsgi_temp_path {workdir}/tmp; scgi_temp_path {workdir}/tmp;
  sendfile on;
  keepalive_requests 100000;
  server {{ listen {listen}; root {root}; }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cmd = [nginx, "-c", conf, "-p", workdir, "-e", f"{workdir}/error.log"]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    sh(cmd, cap=30)
    RUN.on_exit("stop nginx", lambda: stop_nginx(workdir))
    host, port = listen.rsplit(":", 1)
    probe = ["python3", "-c", "import socket,sys; socket.create_connection((sys.argv[1], "
             "int(sys.argv[2])), timeout=1).close()", host, port]
    if netns:
        probe = ["ip", "netns", "exec", netns] + probe
    for _ in range(50):
        if sh(probe, cap=5, check=False, quiet=True).returncode == 0:
            return os.path.join(workdir, "access.log")
        time.sleep(0.1)
    raise FleetError(f"nginx did not start; see {workdir}/error.log")


def stop_nginx(workdir: str) -> None:
    pidfile = os.path.join(workdir, "nginx.pid")
    try:
        pid = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def log_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def egress(path: str, prefix: str, start: int = 0, end: int | None = None) -> dict:
    """Body bytes nginx sent for paths under prefix in log bytes [start, end)."""
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read(None if end is None else end - start).decode(errors="replace")
    out = {"bytes": 0, "requests": 0, "pointer_bytes": 0, "pointer_requests": 0,
           "errors": 0, "statuses": {}}
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if not m or not m.group(4).startswith(prefix):
            continue
        status, sent, url = m.group(1), int(m.group(2)), m.group(4)
        out["bytes"] += sent
        out["requests"] += 1
        out["statuses"][status] = out["statuses"].get(status, 0) + 1
        if status[0] not in "23":
            out["errors"] += 1
        if url[len(prefix):].startswith("channels/"):
            out["pointer_bytes"] += sent
            out["pointer_requests"] += 1
    return out


# ---------------------------------------------------------------------------------------------
# Network: loopback addresses, or namespaces, a bridge and tbf


def parse_rate(text: str) -> int:
    """tc-style rate (80mbit, 8mbit, 500kbit, 1gbit, 1000000bit) in bits per second."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)?", text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"bad rate {text!r} (e.g. 80mbit)")
    mult = {"bit": 1, None: 1, "kbit": 1000, "mbit": 1000**2, "gbit": 1000**3}[m.group(2)]
    return int(float(m.group(1)) * mult)


def fmt_rate(bits: int) -> str:
    return f"{bits / 1e6:g}mbit"


class Net:
    """Where things run: `prefix(i)` runs a command in node i's place (0: the origin)."""

    def prefix(self, i: int) -> list:
        return []

    def node_ip(self, k: int) -> str:
        return f"127.0.0.{10 + k}"

    origin_ip = "127.0.0.1"

    def setup(self, n: int) -> None:
        pass


class NetnsNet(Net):
    def __init__(self, lan_bits: int, origin_bits: int):
        tag = f"{os.getpid() % 100000}"
        self.hub = f"rfh{tag}"
        self.origin_ns = f"rfo{tag}"
        self.node_ns = lambda k: f"rfn{tag}-{k}"
        self.lan_bits, self.origin_bits = lan_bits, origin_bits
        self.created: list = []
        self.origin_ip = f"{SUBNET}.0.1"

    def prefix(self, i: int) -> list:
        return ["ip", "netns", "exec", self.origin_ns if i == 0 else self.node_ns(i)]

    def node_ip(self, k: int) -> str:
        return f"{SUBNET}.1.{k}"

    def _ns(self, name: str) -> None:
        sh(["ip", "netns", "add", name], cap=10)
        self.created.append(name)
        sh(["ip", "-n", name, "link", "set", "lo", "up"], cap=10)

    def teardown(self) -> None:
        for name in reversed(self.created):
            pids = sh(["ip", "netns", "pids", name], cap=10, check=False, quiet=True,
                      cleanup=True).stdout
            for pid in pids.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for name in reversed(self.created):
            sh(["ip", "netns", "del", name], cap=10, check=False, cleanup=True)
        self.created.clear()

    @staticmethod
    def _tbf(ns: str, dev: str, bits: int) -> None:
        # burst >= rate/250 bytes (rate in bytes/s), at least 64 KiB (GSO packets), 256 KiB max
        burst = min(max(64 * 1024, bits // 8 // 250 * 2), 256 * 1024)
        sh(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
            "rate", f"{bits}bit", "burst", str(burst), "latency", "100ms"], cap=10)

    def _link(self, ns: str, host_dev: str, ip: str, bits: int) -> None:
        sh(["ip", "-n", self.hub, "link", "add", host_dev, "type", "veth", "peer", "name",
            "eth0", "netns", ns], cap=10)
        sh(["ip", "-n", self.hub, "link", "set", host_dev, "master", "br0", "up"], cap=10)
        sh(["ip", "-n", ns, "addr", "add", f"{ip}/16", "dev", "eth0"], cap=10)
        sh(["ip", "-n", ns, "link", "set", "eth0", "up"], cap=10)
        self._tbf(ns, "eth0", bits)          # egress from the namespace
        self._tbf(self.hub, host_dev, bits)  # egress towards it

    def setup(self, n: int) -> None:
        RUN.on_exit("delete namespaces", self.teardown)
        self._ns(self.hub)
        sh(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"], cap=10)
        sh(["ip", "-n", self.hub, "link", "set", "br0", "up"], cap=10)
        self._ns(self.origin_ns)
        self._link(self.origin_ns, "vo", self.origin_ip, self.origin_bits)
        for k in range(1, n + 1):
            self._ns(self.node_ns(k))
            self._link(self.node_ns(k), f"vn{k}", self.node_ip(k), self.lan_bits)

    def wait_reachable(self, n: int, host: str, port: int) -> None:
        """Waits until every node connects to host:port (bridge ports come up asynchronously)."""
        probe = ["python3", "-c", "import socket,sys; socket.create_connection((sys.argv[1], "
                 "int(sys.argv[2])), timeout=1).close()", host, str(port)]
        for k in range(1, n + 1):
            for _ in range(50):
                if sh(self.prefix(k) + probe, cap=5, check=False, quiet=True).returncode == 0:
                    break
                time.sleep(0.2)
            else:
                raise FleetError(f"node {k} cannot reach the origin {host}:{port}")


def measure_download(net: Net, where: int, url: str, nbytes: int) -> float:
    """Bits per second of one ranged GET of nbytes, run in node `where`'s place."""
    code = ("import sys,time,urllib.request as u\n"
            "r=u.Request(sys.argv[1],headers={'Range':'bytes=0-'+str(int(sys.argv[2])-1)})\n"
            "t=time.monotonic(); d=u.urlopen(r,timeout=60).read()\n"
            "print(len(d), time.monotonic()-t)\n")
    out = sh(net.prefix(where) + ["python3", "-c", code, url, nbytes], cap=90).stdout.split()
    return int(out[0]) * 8 / float(out[1])


def measure_lan(net: NetnsNet, nbytes: int) -> float:
    """Bits per second of one TCP stream from node 2 to node 1."""
    server = ("import socket,sys\n"
              "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
              "s.bind((sys.argv[1],5999)); s.listen(1); s.settimeout(30)\n"
              "c,_=s.accept(); c.sendall(b'x'*int(sys.argv[2])); c.close()\n")
    client = ("import socket,sys,time\n"
              "for _ in range(50):\n"
              "  try: c=socket.create_connection((sys.argv[1],5999),timeout=30); break\n"
              "  except OSError: time.sleep(0.1)\n"
              "t=time.monotonic(); n=0\n"
              "while (b:=c.recv(1<<20)): n+=len(b)\n"
              "print(n, time.monotonic()-t)\n")
    proc = subprocess.Popen(net.prefix(2) + ["python3", "-c", server, net.node_ip(2),
                                             str(nbytes)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = sh(net.prefix(1) + ["python3", "-c", client, net.node_ip(2)], cap=60).stdout
        n, secs = out.split()
        return int(n) * 8 / float(secs)
    finally:
        killpg(proc)
        proc.wait(timeout=5)


# ---------------------------------------------------------------------------------------------
# The run


def relsync_update(args, net: Net, where: int, origin: str, trust: str, install: str) -> dict:
    cmd = net.prefix(where) + [args.relsync, "update", "--origin", origin, "--trust", trust, "--product", "app",
                               "--install", install, "--json", "--no-mdns"]
    p = sh(cmd, cap=RUN.remaining(), env=child_env())
    return json.loads(p.stdout.strip().splitlines()[-1])


def pct(values: list, q: float):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def fleet(args) -> dict:
    work = args.work
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    result: dict = {"mode": args.mode, "nodes": args.nodes, "work": work, "logs": logs}
    if args.mode == "netns":
        result["lan_rate_bits"], result["origin_rate_bits"] = args.lan_bits, args.origin_bits
    net: Net = NetnsNet(args.lan_bits, args.origin_bits) if args.mode == "netns" else Net()

    log(f"generating releases ({args.release_mib} MiB, {args.delta_mib} MiB changed)")
    rel = make_releases(os.path.join(work, "releases"), args.release_mib, args.delta_mib,
                        args.seed)
    result["release"] = {k: v for k, v in rel.items() if k not in ("v1", "v2")}

    key = os.path.join(work, "publisher.key")
    sh([args.publisher, "keygen", "--out", key])
    trust = open(key + ".pub").read().strip()
    # The fleet's swarm key: nodes share only with nodes holding it.
    swarm_key = os.path.join(work, "swarm.key")
    sh([args.relsync, "swarm-key", "--out", swarm_key])

    origin_root = os.path.join(work, "origin")
    origin_a, origin_b = os.path.join(origin_root, "a"), os.path.join(origin_root, "b")
    staging = os.path.join(work, "staging")
    os.makedirs(origin_root)
    log("pushing v1 to origin a")
    sh([args.publisher, "push", rel["v1"], "--version", "1.0.0", "--channel", "stable",
        "--key", key, "--to", origin_a], cap=RUN.remaining())
    sh(["cp", "-a", origin_a, staging])
    log("pushing v2 to the staging copy")
    sh([args.publisher, "push", rel["v2"], "--version", "1.1.0", "--channel", "stable",
        "--key", key, "--to", staging], cap=RUN.remaining())
    sh(["cp", "-a", staging, origin_b])  # origin b: v2 published, for the baseline

    log("installing v1 (pristine, from the origin folder)")
    pristine = os.path.join(work, "pristine")
    report = relsync_update(args, Net(), 0, origin_a, trust, pristine)
    if report.get("version") != "1.0.0":
        raise FleetError(f"pristine install: {report}")
    if diffs := tree_diff(os.path.join(pristine, "current"), rel["v1"]):
        raise FleetError(f"pristine install differs from v1: {diffs[:5]}")

    def copy_install(dst):
        sh(["cp", "-a", pristine, dst])
        key_file = os.path.join(dst, ".relsync", "peer-key")
        if os.path.exists(key_file):
            os.remove(key_file)

    nodes_dir = os.path.join(work, "nodes")
    os.makedirs(nodes_dir)
    installs = [os.path.join(nodes_dir, f"node{k:02d}") for k in range(1, args.nodes + 1)]
    for dst in installs:
        copy_install(dst)
    baseline_dir = os.path.join(work, "baseline")
    copy_install(baseline_dir)

    log(f"network: {args.mode}")
    net.setup(args.nodes)
    if args.mode == "netns":
        listen = f"{net.origin_ip}:{NGINX_PORT}"
    else:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            listen = f"127.0.0.1:{s.getsockname()[1]}"
    access = start_nginx(os.path.join(work, "nginx"), origin_root, listen,
                         net.origin_ns if args.mode == "netns" else None)
    if args.mode == "netns":
        net.wait_reachable(args.nodes, net.origin_ip, NGINX_PORT)
    url_a, url_b = f"http://{listen}/a/", f"http://{listen}/b/"
    result["origin"] = url_a

    if args.mode == "netns":
        biggest = max((os.path.join(d, f) for d, _, fs in os.walk(origin_a) for f in fs),
                      key=os.path.getsize)
        url = url_a + os.path.relpath(biggest, origin_a)
        nbytes = min(os.path.getsize(biggest), max(256 * 1024, args.origin_bits // 8 * 2))
        got = measure_download(net, 1, url, nbytes)
        result["shaping_origin_measured_bits"] = got
        log(f"shaping: one origin download {got / 1e6:.2f} Mbit/s "
            f"(origin rate {fmt_rate(args.origin_bits)})")
        if got > 1.3 * args.origin_bits or got < 0.5 * args.origin_bits:
            raise FleetError(f"origin shaping is off: measured {got / 1e6:.2f} Mbit/s, "
                             f"want {args.origin_bits / 1e6:g}")
        if args.nodes >= 2:
            got = measure_lan(net, max(1 * MIB, args.lan_bits // 8))
            result["shaping_lan_measured_bits"] = got
            log(f"shaping: node 2 -> node 1 {got / 1e6:.2f} Mbit/s "
                f"(lan rate {fmt_rate(args.lan_bits)})")
            if got > 1.3 * args.lan_bits or got < 0.5 * args.lan_bits:
                raise FleetError(f"LAN shaping is off: measured {got / 1e6:.2f} Mbit/s")

    # Baseline: one node alone, origin b (v2 already published), no peers.
    log("baseline: one update from origin b, no peers")
    mark = log_size(access)
    base = relsync_update(args, net, 1, url_b, trust, baseline_dir)
    base_log = egress(access, "/b/", mark)
    if base.get("version") != "1.1.0" or base.get("up_to_date"):
        raise FleetError(f"baseline did not update to 1.1.0: {base}")
    if diffs := tree_diff(os.path.join(baseline_dir, "current"), rel["v2"]):
        raise FleetError(f"baseline tree differs from v2: {diffs[:5]}")
    result["baseline"] = {"report": base, "nginx": base_log}
    log(f"baseline: {base['bytes_from_origin']} bytes from origin "
        f"(nginx {base_log['bytes']}), {base['duration_ms']} ms")

    # Fleet: daemons on origin a (v1), full mesh; then publish v2 into a.
    stop_after = int(RUN.remaining()) + 30
    daemons: list[Daemon] = []
    addrs: list[str] = []
    for k, inst in enumerate(installs, start=1):
        ip = net.node_ip(k)
        port = PEER_PORT if args.mode == "netns" else 0
        cmd = net.prefix(k) + [args.relsync, "serve", "--install", inst,
                               "--swarm-key", swarm_key,
                               "--listen", f"/ip4/{ip}/tcp/{port}", "--no-mdns",
                               "--origin", url_a, "--trust", trust, "--product", "app", "--interval", "1s",
                               "--json", "--stop-after", f"{stop_after}s", "--peer-wait", "2s"]
        for a in addrs:
            cmd += ["--peer", a]
        d = Daemon(f"node{k:02d}", cmd, logs)
        daemons.append(d)
        try:
            _, line = d.get(RUN.remaining(15))
        except queue.Empty:
            line = None
        if not line or not line.startswith("/") or "/p2p/" not in line:
            raise FleetError(f"{d.name} printed no listen address ({line!r}); "
                             f"see {d.stderr_path}")
        if "/tcp/0/" in line:
            raise FleetError(f"{d.name} printed an unresolved address {line}")
        addrs.append(line)
    result["addresses"] = addrs
    time.sleep(min(RUN.remaining(), 2.0 + 2.0))  # the last node's --peer-wait, then settle

    pre = []
    for d in daemons:
        while True:
            try:
                t, line = d.get(0)
            except queue.Empty:
                break
            if line is not None and line.startswith("/"):
                continue  # further listen addresses
            pre.append((d.name, line))
            if line is None:
                raise FleetError(f"{d.name} exited before the publish; see {d.stderr_path}")
    if pre:
        log(f"warning: output before the publish: {pre}")
    result["before_publish"] = pre

    mark = log_size(access)
    log(f"publishing v2 into origin a ({args.nodes} daemons running)")
    t0 = publish_atomically(staging, origin_a)
    per = {d.name: {"updated_s": None, "failures": [], "report": None, "stats": None}
           for d in daemons}
    pending = set(per)
    deadline = min(RUN.deadline, t0 + args.update_timeout)
    while pending and time.monotonic() < deadline:
        for d in daemons:
            if d.name not in pending:
                continue
            while True:
                try:
                    t, line = d.get(0)
                except queue.Empty:
                    break
                if line is None:
                    per[d.name]["failures"].append("exited")
                    pending.discard(d.name)
                    break
                ev = json.loads(line) if line.startswith("{") else {"event": "text", "l": line}
                if ev.get("event") == "update":
                    per[d.name]["updated_s"] = t - t0
                    per[d.name]["report"] = ev["report"]
                    pending.discard(d.name)
                    log(f"{d.name} updated after {t - t0:.2f} s: "
                        f"{ev['report'].get('bytes_from_origin')} B origin, "
                        f"{ev['report'].get('bytes_from_peers')} B peers")
                    break
                if ev.get("event") == "update_failed":
                    per[d.name]["failures"].append(f"{t - t0:.2f}s: {ev.get('error')}")
                    log(f"{d.name} update failed after {t - t0:.2f} s: {ev.get('error')}")
        time.sleep(0.05)
    t_end = time.monotonic()
    if pending:
        log(f"not updated within {deadline - t0:.0f} s: {sorted(pending)}")

    log("stopping the daemons")
    for d in daemons:
        d.terminate()
    for d in daemons:
        end = time.monotonic() + 15
        while time.monotonic() < end:
            try:
                _, line = d.get(end - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith("{"):
                ev = json.loads(line)
                if ev.get("event") == "stopped":
                    per[d.name]["stats"] = ev.get("stats")
                elif ev.get("event") == "update" and per[d.name]["report"] is None:
                    per[d.name]["report"] = ev["report"]
        try:
            d.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            d.kill()
        per[d.name]["exit"] = d.proc.returncode
    fleet_log = egress(access, "/a/", mark)

    for d, inst in zip(daemons, installs):
        diffs = tree_diff(os.path.join(inst, "current"), rel["v2"])
        per[d.name]["tree_ok"] = not diffs
        if diffs:
            per[d.name]["tree_diffs"] = diffs[:10]
        per[d.name]["stderr"] = d.stderr_path
        per[d.name]["stdout"] = d.stdout_path

    # Summary
    times = [p["updated_s"] for p in per.values() if p["updated_s"] is not None]
    uploads = [(p["stats"] or {}).get("bytes_uploaded", 0) for p in per.values()]
    reports = [p["report"] or {} for p in per.values()]
    base_bytes = base_log["bytes"]
    t1 = base["duration_ms"] / 1000
    s = {
        "baseline_origin_bytes": base["bytes_from_origin"],
        "baseline_nginx_bytes": base_bytes,
        "baseline_s": t1,
        "egress_bytes": fleet_log["bytes"],
        "egress_requests": fleet_log["requests"],
        "egress_pointer_bytes": fleet_log["pointer_bytes"],
        "egress_pointer_requests": fleet_log["pointer_requests"],
        "egress_errors": fleet_log["errors"],
        "egress_ratio": fleet_log["bytes"] / base_bytes if base_bytes else None,
        "wasted_bytes": fleet_log["bytes"] - base_bytes,
        "fleet_window_s": t_end - t0,
        "nodes_updated": len(times),
        "nodes_tree_ok": sum(p["tree_ok"] for p in per.values()),
        "nodes_with_failures": sum(bool(p["failures"]) for p in per.values()),
        "time_p50_s": statistics.median(times) if times else None,
        "time_max_s": max(times) if len(times) == args.nodes else None,
        "time_max_over_t1": (max(times) / t1) if len(times) == args.nodes and t1 else None,
        "sum_node_bytes_from_origin": sum(r.get("bytes_from_origin", 0) for r in reports),
        "sum_node_bytes_from_peers": sum(r.get("bytes_from_peers", 0) for r in reports),
        "upload_min": min(uploads), "upload_median": statistics.median(uploads),
        "upload_max": max(uploads),
        "busy_answers": sum((p["stats"] or {}).get("busy_answers", 0) for p in per.values()),
        "peers_banned": sum((p["stats"] or {}).get("peers_banned", 0) for p in per.values()),
    }
    result["summary"] = s
    result["per_node"] = per
    result["origin_log"] = {"fleet": fleet_log, "access_log": access}
    return result


def check(args, result: dict) -> list:
    """The goals that do not hold."""
    s, bad = result["summary"], []
    if s["nodes_updated"] != args.nodes:
        bad.append(f"{args.nodes - s['nodes_updated']} node(s) did not update")
    if s["nodes_tree_ok"] != args.nodes:
        bad.append(f"{args.nodes - s['nodes_tree_ok']} node(s) differ from v2")
    if s["egress_ratio"] is None or s["egress_ratio"] > 1.2:
        bad.append(f"CDN egress {s['egress_ratio'] or 0:.2f}x the baseline (goal <= 1.2x)")
    if args.mode == "netns":
        ratio = s["time_max_over_t1"]
        if ratio is None or ratio > 2:
            bad.append("max time-to-updated " + ("not reached" if ratio is None else
                       f"{ratio:.2f}x T1") + " (goal <= 2x)")
    return bad


def mib(b) -> str:
    return "—" if b is None else f"{b / MIB:.2f} MiB"


def secs(x) -> str:
    return "—" if x is None else f"{x:.2f} s"


def render(args, r: dict) -> str:
    s = r["summary"]
    rates = (f"LAN {fmt_rate(args.lan_bits)}, origin {fmt_rate(args.origin_bits)}"
             if args.mode == "netns" else "unshaped (loopback)")
    rows = [
        ("mode / nodes", f"{r['mode']} / {r['nodes']}"),
        ("rates", rates),
        ("release v1 / changed in v2",
         f"{mib(r['release']['v1_bytes'])} in {r['release']['files']} files / "
         f"{mib(r['release']['changed_bytes'])}"),
        ("baseline origin bytes (delta): client / nginx",
         f"{s['baseline_origin_bytes']} / {s['baseline_nginx_bytes']} "
         f"({mib(s['baseline_nginx_bytes'])})"),
        ("baseline time T1", secs(s["baseline_s"])),
        ("CDN egress, fleet (nginx /a/)",
         f"{s['egress_bytes']} ({mib(s['egress_bytes'])}, {s['egress_requests']} requests, "
         f"{s['egress_pointer_requests']} pointer polls = {s['egress_pointer_bytes']} B)"),
        ("egress / baseline", "—" if s["egress_ratio"] is None else f"{s['egress_ratio']:.3f}"),
        ("wasted (egress - baseline)", f"{s['wasted_bytes']} ({mib(s['wasted_bytes'])})"),
        ("nodes updated / tree = v2 / with update_failed",
         f"{s['nodes_updated']}/{r['nodes']} / {s['nodes_tree_ok']}/{r['nodes']} / "
         f"{s['nodes_with_failures']}"),
        ("time-to-updated p50 / max", f"{secs(s['time_p50_s'])} / {secs(s['time_max_s'])}"),
        ("max / T1", "—" if s["time_max_over_t1"] is None else f"{s['time_max_over_t1']:.2f}"),
        ("sum over nodes: from origin / from peers",
         f"{mib(s['sum_node_bytes_from_origin'])} / {mib(s['sum_node_bytes_from_peers'])}"),
        ("upload per node min / median / max",
         f"{mib(s['upload_min'])} / {mib(s['upload_median'])} / {mib(s['upload_max'])}"),
        ("busy answers / peers banned", f"{s['busy_answers']} / {s['peers_banned']}"),
    ]
    out = ["| metric | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    out += ["", "| node | updated after | from origin | from peers | uploaded | failures |",
            "|---|---|---|---|---|---|"]
    for name, p in r["per_node"].items():
        rep, st = p["report"] or {}, p["stats"] or {}
        out.append(f"| {name} | {secs(p['updated_s'])} | {mib(rep.get('bytes_from_origin'))} "
                   f"| {mib(rep.get('bytes_from_peers'))} | {mib(st.get('bytes_uploaded'))} "
                   f"| {len(p['failures'])}{'' if p['tree_ok'] else ' TREE DIFFERS'} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["loopback", "netns"], default="loopback")
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--work", help="work dir (default: a new temp dir, kept)")
    ap.add_argument("--bin-dir", default=os.path.join(REPO, "target", "release"))
    ap.add_argument("--release-mib", type=float, default=32)
    ap.add_argument("--delta-mib", type=float, default=8)
    ap.add_argument("--lan-rate", type=parse_rate, default=parse_rate("80mbit"))
    ap.add_argument("--origin-rate", type=parse_rate, help="default: --lan-rate / 10")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rust-log", help="RUST_LOG for the daemons (default: unset), to diagnose")
    ap.add_argument("--json-out")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the goals hold")
    ap.add_argument("--timeout", type=float, default=600, help="for the whole run (s)")
    ap.add_argument("--update-timeout", type=float, default=300,
                    help="how long nodes get to update after the publish (s)")
    args = ap.parse_args()
    args.lan_bits = args.lan_rate
    args.origin_bits = args.origin_rate or args.lan_rate // 10
    args.relsync = os.path.join(args.bin_dir, "relsync")
    args.publisher = os.path.join(args.bin_dir, "cdn-publisher")
    for b in (args.relsync, args.publisher):
        if not os.access(b, os.X_OK):
            sys.exit(f"fleet: {b} not found; build with cargo build --release (or --bin-dir)")
    limit = 30 if args.mode == "netns" else 200
    if not 1 <= args.nodes <= limit:
        sys.exit(f"fleet: --nodes must be 1..{limit} in {args.mode} mode")
    if args.mode == "netns" and os.geteuid() != 0:
        sys.exit("fleet: netns mode needs root")
    if args.work:
        os.makedirs(args.work, exist_ok=True)
        if os.listdir(args.work):
            sys.exit(f"fleet: --work {args.work} is not empty")
        args.work = os.path.abspath(args.work)
    else:
        args.work = tempfile.mkdtemp(prefix="relsync-fleet-")

    global RUN, RUST_LOG
    RUN = Run(args.timeout)
    RUST_LOG = args.rust_log

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def on_alarm(_signum, _frame):
        raise Timeout("the run took longer than --timeout")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout) + 60)  # last resort; every wait is bounded by the deadline
    log(f"work dir {args.work}")
    result, failed = None, None
    try:
        result = fleet(args)
    except (FleetError, KeyboardInterrupt, Exception) as e:
        failed = e
    finally:
        signal.alarm(0)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        RUN.cleanup()
    if failed is not None:
        if not isinstance(failed, (FleetError, KeyboardInterrupt)):
            import traceback
            traceback.print_exception(failed)
        print(f"fleet: FAIL: {type(failed).__name__}: {failed}", file=sys.stderr)
        print(f"fleet: logs in {os.path.join(args.work, 'logs')} (daemon stderr/stdout), "
              f"nginx in {os.path.join(args.work, 'nginx')}", file=sys.stderr)
        return 2
    table = render(args, result)
    print(table)
    bad = check(args, result)
    result["check"] = {"failed": bad, "passed": not bad}
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1, default=str)
    if any(p["failures"] or not p["tree_ok"] or p["updated_s"] is None
           for p in result["per_node"].values()):
        print("\nlogs of nodes that failed:", file=sys.stderr)
        for name, p in result["per_node"].items():
            if p["failures"] or not p["tree_ok"] or p["updated_s"] is None:
                print(f"  {name}: {p['stderr']} {p['failures'][:3]}", file=sys.stderr)
    print(f"\nwork dir: {args.work}", file=sys.stderr)
    if bad:
        print(f"daemon logs: {os.path.join(args.work, 'logs')}/nodeNN.{{stderr,stdout}} "
              f"(--rust-log relsync_engine=debug,relsync_peer=debug for detail); origin log: "
              f"{result['origin_log']['access_log']}", file=sys.stderr)
        print("CHECK FAILED: " + "; ".join(bad), file=sys.stderr)
        return 1 if args.check else 0
    if args.check:
        print("CHECK PASSED", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
