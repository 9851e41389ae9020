#!/usr/bin/env python3
"""The bandwidth harness proper; run it through benches/bandwidth.sh, which installs what it
needs, fetches the releases and builds the binaries.

Publishes release sequences to an origin folder served by nginx on 127.0.0.1 (one channel per
sequence), runs `relsync update` against it, and measures each update and fresh install:
bytes on the wire and requests from nginx's access log (which must agree with the client's own
count), wall time, client peak RSS, and the issue's request bound. Every installed tree is
compared with its release. Writes markdown tables to stdout and OUT/bandwidth.md, the raw
numbers to OUT/bandwidth.json and, with matplotlib, a chart to OUT/bandwidth.png.
"""
import argparse
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

MIB = 1 << 20
STARTED = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.0f}s] {msg}", file=sys.stderr, flush=True)


def fail(msg: str) -> None:
    sys.exit(f"bandwidth: FAIL: {msg}")


def run(cmd: list, **kw) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        fail(f"{' '.join(map(str, cmd))} exited with {p.returncode}:\n{p.stderr}{p.stdout}")
    return p.stdout


def make_tar(tree: str, tar: str) -> None:
    """A deterministic tar of a tree, made like ../shared/bench/fetch-releases.sh makes it."""
    run(["tar", "-C", tree, "--sort=name", "--mtime=@0", "--owner=0", "--group=0",
         "--numeric-owner", "-cf", tar, "."])


@dataclass
class Release:
    name: str     # sequence name: ruff, numpy, synthetic
    label: str    # version as shown in tables
    version: str  # semver pushed
    tree: str
    tar: str


@dataclass
class Row:
    scenario: str     # previous, older, fresh
    name: str
    old: str | None   # label of the installed version (None: fresh install)
    new: str
    full: int         # bytes of `zstd -19 --long=31` of the new release's tar
    wire: int         # body bytes nginx sent
    requests: int     # requests in nginx's log
    bound: int        # 8 + ceil(bytes / 1 MiB)
    wall_ms: int
    peak_kib: int
    report: dict      # the client's --json report

    @property
    def pair(self) -> str:
        return f"{self.name} {self.old}->{self.new}"


class Bench:
    def __init__(self, args):
        self.bin, self.releases, self.work = args.bin, args.releases, args.work
        self.origin = os.path.join(self.work, "origin")
        self.nginx = os.path.join(self.work, "nginx")
        self.log = os.path.join(self.nginx, "access.log")
        self.url = f"http://127.0.0.1:{args.port}/"
        self.rows: list[Row] = []
        self.pushes: list[dict] = []
        self.clients = 0
        self.key = os.path.join(self.work, "key")
        run([f"{self.bin}/cdn-publisher", "keygen", "--out", self.key])
        with open(self.key + ".pub") as f:
            self.trust = f.read().strip()
        os.makedirs(self.origin, exist_ok=True)
        run([os.path.join(args.root, "scripts", "nginx-origin.sh"), "start", self.origin,
             self.nginx, str(args.port)])

    # -- releases --------------------------------------------------------------------------

    def real(self, name: str, versions: list[str]) -> list[Release]:
        return [Release(name, v, v, f"{self.releases}/{name}-{v}",
                        f"{self.releases}/{name}-{v}.tar") for v in versions]

    def synthetic(self, script: str, n: int) -> list[Release]:
        """Versions 1..n of scripts/make-demo-release.py (8 MiB binary with scattered edits)."""
        out = []
        for i in range(1, n + 1):
            tree = os.path.join(self.work, f"synthetic-{i}")
            run([sys.executable, script, tree, str(i)])
            make_tar(tree, tree + ".tar")
            out.append(Release("synthetic", str(i), f"1.{i - 1}.0", tree, tree + ".tar"))
        return out

    def full_size(self, rel: Release) -> int:
        """Size of `zstd -19 --long=31 -T1` of the release's tar, cached beside the releases
        (synthetic tars are generated per run, so their cache entry is named by content)."""
        if rel.name == "synthetic":
            with open(rel.tar, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()[:16]
            cache = os.path.join(self.releases, f"synthetic-{digest}.tar.zst-size")
        else:
            cache = rel.tar + ".zst-size"
        try:
            with open(cache) as f:
                return int(f.read())
        except (OSError, ValueError):
            pass
        log(f"zstd -19 --long=31 of {os.path.basename(rel.tar)} (cached afterwards)")
        with open(rel.tar, "rb") as src:
            p = subprocess.run(["zstd", "-19", "--long=31", "-T1", "-q", "-c"], stdin=src,
                               capture_output=True, check=True)
        with open(cache + ".tmp", "w") as f:
            f.write(str(len(p.stdout)))
        os.replace(cache + ".tmp", cache)
        return len(p.stdout)

    # -- publisher and client ---------------------------------------------------------------

    def push(self, channel: str, rel: Release, delta_from: int) -> None:
        log(f"push {rel.name} {rel.label} to {channel} (--delta-from {delta_from})")
        out = run([f"{self.bin}/cdn-publisher", "push", rel.tree, "--version", rel.version,
                   "--channel", channel, "--key", self.key, "--to", self.origin, "--json",
                   "--delta-from", str(delta_from)])
        summary = json.loads(out)
        summary.update(channel=channel, label=f"{rel.name} {rel.label}", delta_from=delta_from)
        self.pushes.append(summary)

    def new_client(self) -> str:
        self.clients += 1
        return os.path.join(self.work, f"client-{self.clients}")

    def log_since(self, mark: int) -> list[str]:
        with open(self.log) as f:
            return f.read().splitlines()[mark:]

    def update(self, channel: str, install: str, rel: Release) -> tuple[dict, int, int, int]:
        """Runs `relsync update` once; returns (report, wire bytes, requests, peak RSS KiB)."""
        mark = len(self.log_since(0))
        rss = os.path.join(self.work, "rss")
        out = run(["/usr/bin/time", "-f", "%M", "-o", rss, f"{self.bin}/relsync", "update",
                   "--origin", self.url, "--channel", channel, "--trust", self.trust,
                   "--install", install, "--json"])
        report = json.loads(out)
        with open(rss) as f:
            peak = int(f.read().split()[-1])
        if report["version"] != rel.version:
            fail(f"{install} is at {report['version']}, expected {rel.version}")
        # nginx logs a request once it has been sent, which can trail the client by a moment.
        deadline = time.monotonic() + 5
        while True:
            lines = self.log_since(mark)
            wire = sum(int(line.split()[1]) for line in lines)
            if wire == report["bytes_downloaded"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if wire != report["bytes_downloaded"]:
            fail(f"{channel}: the client counted {report['bytes_downloaded']} bytes but nginx "
                 f"sent {wire} in {len(lines)} requests (log: {self.log})")
        if len(lines) != report["requests"]:
            log(f"warning: the client counted {report['requests']} requests, nginx logged "
                f"{len(lines)}")
        bad = [line for line in lines if not line.startswith(("200 ", "206 "))]
        if bad:
            log(f"warning: {len(bad)} responses were not 200/206, e.g. {bad[0]}")
        # The installed tree must be the release: contents, and symlinks as symlinks.
        p = subprocess.run(["diff", "-r", "--no-dereference",
                            os.path.join(install, "current", ""), rel.tree],
                           capture_output=True, text=True)
        if p.returncode != 0:
            fail(f"{install}/current differs from {rel.tree}:\n{p.stdout[:2000]}{p.stderr}")
        return report, wire, len(lines), peak

    def measure(self, scenario: str, channel: str, install: str, old: Release | None,
                new: Release) -> None:
        report, wire, requests, peak = self.update(channel, install, new)
        row = Row(scenario, new.name, old.label if old else None, new.label,
                  self.full_size(new), wire, requests,
                  8 + math.ceil(report["bytes_downloaded"] / MIB), report["duration_ms"], peak,
                  report)
        self.rows.append(row)
        log(f"  {scenario} {row.pair if old else new.name + ' ' + new.label}: {wire} B, "
            f"{requests} requests, {row.wall_ms} ms, {peak / 1024:.1f} MiB peak; "
            f"chunks fetched {report['chunks_fetched']} ({report['chunks_delta']} as deltas), "
            f"solid frames {report['solid_frames']}")

    # -- scenarios --------------------------------------------------------------------------

    def previous_to_new(self, channel: str, seq: list[Release]) -> None:
        """Publishes seq in order. After each push, the client installed fresh at the previous
        version updates to it; then a new client installs it fresh (for the newest release,
        that fresh install is the reported one)."""
        prev = None
        for i, rel in enumerate(seq):
            self.push(channel, rel, 1)
            if prev:
                self.measure("previous", channel, prev[0], prev[1], rel)
            install = self.new_client()
            if i == len(seq) - 1:
                self.measure("fresh", channel, install, None, rel)
            else:
                self.update(channel, install, rel)
            prev = (install, rel)

    def older_to_new(self, channel: str, seq: list[Release]) -> None:
        """Publishes seq with --delta-from 2; a client installed at the oldest updates to the
        newest."""
        install = self.new_client()
        for i, rel in enumerate(seq):
            self.push(channel, rel, 2)
            if i == 0:
                self.update(channel, install, rel)
        self.measure("older", channel, install, seq[0], seq[-1])


# -- reporting ------------------------------------------------------------------------------

def load_anchors(path: str) -> dict[str, dict[str, str]]:
    """The "tree" rows of ANCHORS.md, keyed by pair ("ruff 0.6.0->0.6.1"), then by column."""
    rows, header = {}, None
    with open(path) as f:
        for line in f:
            if not line.startswith("|"):
                header = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == "release pair":
                header = cells
            elif header and len(cells) == len(header) and cells[1] == "tree":
                rows[cells[0]] = dict(zip(header, cells))
    return rows


def anchor(anchors: dict, pair: str, prefix: str) -> str | None:
    """The ANCHORS cell of the column whose name starts with prefix, e.g. "2.76 MB (38.5%)"."""
    row = anchors.get(pair, {})
    return next((v for k, v in row.items() if k.startswith(prefix)), None)


def pct_of(cell: str | None) -> float | None:
    m = re.search(r"\(([\d.]+)%\)", cell or "")
    return float(m.group(1)) if m else None


def mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def pct(n: float, full: float) -> str:
    p = 100 * n / full
    return f"{p:.1f}%" if p >= 1 else f"{p:.2f}%"


def scenario_label(r: Row) -> str:
    if r.scenario == "fresh":
        return f"{r.name} {r.new} fresh install"
    if r.scenario == "older":
        return f"{r.pair} (older; --delta-from 2)"
    return r.pair


def tables(rows: list[Row], pushes: list[dict], anchors: dict) -> str:
    order = {"previous": 0, "older": 1, "fresh": 2}
    rows = sorted(rows, key=lambda r: (r.name == "synthetic", order[r.scenario]))
    out = ["| scenario | full zstd -19 --long | relsync | zstd --patch-from | bsdiff | "
           "requests (≤ bound?) | wall ms | client peak MiB |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pairwise = r.scenario == "previous" and r.name != "synthetic"
        ok = "PASS" if r.requests <= r.bound else "FAIL"
        out.append("| " + " | ".join([
            scenario_label(r), mb(r.full), f"{mb(r.wire)} ({pct(r.wire, r.full)})",
            (anchor(anchors, r.pair, "zstd --patch-from") if pairwise else None) or "—",
            (anchor(anchors, r.pair, "bsdiff") if pairwise else None) or "—",
            f"{r.requests} ≤ {r.bound} {ok}", str(r.wall_ms), f"{r.peak_kib / 1024:.1f}",
        ]) + " |")
    out += ["", "Bytes are response bodies as logged by nginx (`$body_bytes_sent`), equal to "
            "the client's `bytes_downloaded`; percentages are of the full download. The request "
            "bound is `8 + ceil(bytes_downloaded / 1 MiB)`. Pairwise tools from "
            "`../shared/bench/ANCHORS.md` (tree rows).", "",
            "| channel | release | --delta-from | release | packs | delta frames (bytes) | "
            "solid frames | manifest KiB | seconds | publish MB/s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for p in pushes:
        out.append(f"| {p['channel']} | {p['label']} | {p['delta_from']} | {mb(p['bytes'])} "
                   f"| {mb(p['pack_bytes'])} | {p['delta_frames']} ({mb(p['delta_bytes'])}) "
                   f"| {mb(p['solid_bytes'])} | {p['manifest_bytes'] / 1024:.1f} "
                   f"| {p['seconds']:.1f} | {p['mb_per_s']:.2f} |")
    return "\n".join(out) + "\n"


def chart(rows: list[Row], anchors: dict, path: str) -> None:
    """Grouped bars of % of a full download for the previous->new pairs ANCHORS has."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("warning: matplotlib is not available; no chart")
        return
    pairs = [r for r in rows if r.scenario == "previous" and r.pair in anchors]
    if not pairs:
        return
    series = [("relsync", lambda r: 100 * r.wire / r.full)] + [
        (label, lambda r, c=col: pct_of(anchor(anchors, r.pair, c)))
        for label, col in [("zstd --patch-from", "zstd --patch-from"), ("bsdiff", "bsdiff"),
                           ("bita 64K", "bita 64K"), ("casync 64K", "casync 64K")]]
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(pairs)), 4.5))
    width = 0.8 / len(series)
    for i, (label, value) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(pairs))]
        bars = ax.bar(xs, [value(r) or 0 for r in pairs], width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, rotation=90, padding=2)
    ax.axhline(100, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(pairs)), [r.pair for r in pairs])
    ax.set_ylabel("% of a full zstd -19 --long download")
    ax.set_title("Update download size, previous -> new release (tree)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    log(f"chart: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="ruff 0.6.0->0.6.1 and synthetic only")
    ap.add_argument("--root", required=True, help="the workspace")
    ap.add_argument("--bin", required=True, help="directory of relsync and cdn-publisher")
    ap.add_argument("--releases", required=True, help="from fetch-releases.sh")
    ap.add_argument("--anchors", required=True, help="ANCHORS.md")
    ap.add_argument("--work", required=True, help="scratch directory (origin, clients, nginx)")
    ap.add_argument("--out", required=True, help="results directory")
    ap.add_argument("--port", type=int, default=18090)
    ap.add_argument("--revision", default="an unknown revision", help="what was built")
    args = ap.parse_args()

    bench = Bench(args)
    ruff = ["0.6.0", "0.6.1"] if args.quick else ["0.6.0", "0.6.1", "0.6.2", "0.6.3"]
    bench.previous_to_new("ruff", bench.real("ruff", ruff))
    if not args.quick:
        numpy = bench.real("numpy", ["2.1.0", "2.1.1", "2.1.2"])
        bench.previous_to_new("numpy", numpy)
        bench.older_to_new("ruff-d2", bench.real("ruff", ["0.6.0", "0.6.1", "0.6.2"]))
        bench.older_to_new("numpy-d2", numpy)
    script = os.path.join(args.root, "scripts", "make-demo-release.py")
    bench.previous_to_new("synthetic", bench.synthetic(script, 3))

    anchors = load_anchors(args.anchors)
    text = tables(bench.rows, bench.pushes, anchors)
    text += f"\nMeasured on {args.revision}, {time.strftime('%Y-%m-%d')}.\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bandwidth.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "bandwidth.json"), "w") as f:
        json.dump({"rows": [asdict(r) for r in bench.rows], "pushes": bench.pushes}, f, indent=1)
    chart(bench.rows, anchors, os.path.join(args.out, "bandwidth.png"))
    print(text, end="")
    log(f"done; results in {args.out}")


if __name__ == "__main__":
    main()
