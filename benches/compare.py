#!/usr/bin/env python3
"""Side-by-side benchmark: roomcast against the peer servers users would run
instead (../shared/peers), measured with roomcast-bench in one run.

Each server is pinned to CPU 0 and the generator to CPU 1 (taskset); every
scenario runs back to back for every target, the median of --runs is kept,
and a ratio table (roomcast / best peer, and roomcast / the least-work
`ceiling`) is printed and, with --write, put into docs/benchmarks.md
between the COMPARE markers. Loopback only; every run is bounded by --secs.

The fan-out is swept over the generator's in-flight window (8, 32, 128
messages per publisher): at shallow depths every server is bound by the
kernel's per-write cost, at depth by how well it coalesces writes; one
depth alone tells half the story. Round trips (50 clients, each alone in
its room) and memory per idle connection complete it.

Targets `roomcast+history`, `roomcast+presence`, `roomcast+tls` and
`roomcast+deflate` run roomcast with one feature on (rooms keep 100
messages; presence with join/leave events; wss:// with a P-256 certificate;
permessage-deflate negotiated), so the cost of each shows in the same table.

    python3 benches/compare.py --runs 3 --secs 5 --write
    python3 benches/compare.py --targets "roomcast roomcast+tls" --scenarios "fanout_w32"
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = ["node-ws", "python-websockets", "rust-tokio", "node-uws", "ceiling"]
BENCH = os.path.join(ROOT, "target/release/roomcast-bench")
BROKER = os.path.join(ROOT, "target/release/roomcast")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build(peers_dir, targets):
    log("building roomcast and roomcast-bench (release)")
    subprocess.run(["cargo", "build", "--release", "--bins", "--quiet"], cwd=ROOT, check=True)
    for t in targets:
        if t not in VARIANTS:
            log(f"building peer {t}")
            subprocess.run(["bash", os.path.join(peers_dir, "targets", t, "build.sh")], check=True)


# roomcast with one feature on: extra server flags, extra generator flags.
VARIANTS = {
    "roomcast": ([], []),
    "roomcast+history": (["--history-size", "100"], []),
    "roomcast+presence": (["--presence", "--join-leave"], []),
    "roomcast+tls": (["--tls-cert", "{work}/cert.pem", "--tls-key", "{work}/key.pem"], ["--tls-ca", "{work}/cert.pem"]),
    "roomcast+deflate": (["--compression"], ["--compression"]),
}


def certificate(work):
    """A self-signed P-256 certificate for localhost in `work` (for roomcast+tls)."""
    if os.path.exists(os.path.join(work, "cert.pem")):
        return
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE",
                    "-keyout", os.path.join(work, "key.pem"), "-out", os.path.join(work, "cert.pem")],
                   check=True, capture_output=True)


def start(target, port, peers_dir, shards, work):
    """Starts a server pinned to CPU 0; returns (process, ws url, extra generator flags)."""
    extra = []
    if target in VARIANTS:
        flags, extra = VARIANTS[target]
        if target == "roomcast+tls":
            certificate(work)
        flags = [f.format(work=work) for f in flags]
        extra = [f.format(work=work) for f in extra]
        cmd = [BROKER, "--listen", f"127.0.0.1:{port}", "--shards", str(shards), "--log-level", "error",
               "--rate-limit", "1000000000", "--rate-burst", "1000000000", "--max-queue-bytes", "67108864",
               "--stats-interval-secs", "0"] + flags
        env = dict(os.environ)
    else:
        cmd = ["bash", os.path.join(peers_dir, "targets", target, "start.sh")]
        env = dict(os.environ, PORT=str(port))
    cpus = "0" if shards == 1 or target not in VARIANTS else "0,1"
    proc = subprocess.Popen(["taskset", "-c", cpus] + cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 30
    import socket
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            scheme, host = ("wss", "localhost") if target == "roomcast+tls" else ("ws", "127.0.0.1")
            return proc, f"{scheme}://{host}:{port}/ws", extra
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{target} did not listen on {port}")


def server_pid(proc):
    """The server process itself (start.sh execs, taskset execs)."""
    return proc.pid


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def bench(args, cpus="1", timeout=120):
    out = subprocess.run(["taskset", "-c", cpus, BENCH] + args, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in out.stdout.strip().splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"roomcast-bench {' '.join(args)} failed: {out.stderr[-500:]}")
    return json.loads(lines[-1])


def fanout(subs, pubs, window):
    return lambda url, secs, pid: ["fanout", "--url", url, "--subs", str(subs), "--pubs", str(pubs), "--rooms", "1",
                                   "--size", "64", "--rate", "0", "--secs", str(secs), "--window", str(window)]


SCENARIOS = {
    "fanout_w8": ("fan-out 1 000 × 1, window 8 (deliveries/s)", "deliveries_per_s", fanout(1000, 1, 8)),
    "fanout_w32": ("fan-out 1 000 × 1, window 32 (deliveries/s)", "deliveries_per_s", fanout(1000, 1, 32)),
    "fanout_w128": ("fan-out 1 000 × 1, window 128 (deliveries/s)", "deliveries_per_s", fanout(1000, 1, 128)),
    "fanout_100x10": ("fan-out 100 × 10, window 64 (deliveries/s)", "deliveries_per_s", fanout(100, 10, 64)),
    "rtt_50": ("round trips, 50 clients each alone in its room (per s)", "round_trips_per_s",
               lambda url, secs, pid: ["rtt", "--url", url, "--clients", "50", "--size", "64", "--secs", str(secs)]),
    "idle_10000": ("10 000 idle connections in a room, server RSS per connection", "rss_per_conn_bytes",
                   lambda url, secs, pid: ["conns", "--url", url, "--n", "10000", "--hold", "2",
                                           "--room", "idle", "--pid", str(pid)]),
}


def fmt(v, key):
    if key == "rss_per_conn_bytes":
        return f"{v / 1024:.2f} KB"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.0f} k"
    return f"{v:.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--targets", default=" ".join(["roomcast"] + PEERS),
                    help="space-separated; peers, roomcast, and " + ", ".join(v for v in VARIANTS if v != "roomcast"))
    ap.add_argument("--scenarios", default=" ".join(SCENARIOS))
    ap.add_argument("--peers", default=os.path.join(ROOT, "..", "shared", "peers"))
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    ap.add_argument("--no-build", action="store_true", help="use already built binaries and peers")
    ap.add_argument("--peers-in-place", action="store_true",
                    help="use --peers as is (a writable, already built copy) instead of copying it")
    a = ap.parse_args()
    targets = a.targets.split()
    scenarios = a.scenarios.split()
    work = tempfile.mkdtemp(prefix="roomcast-peers-")
    peers_dir = a.peers
    if not a.peers_in_place:
        peers_dir = os.path.join(work, "peers")
        shutil.copytree(a.peers, peers_dir)  # shared/ is read-only where CI runs
    if not a.no_build:
        build(peers_dir, targets)
    results = {}
    port = 19400
    for sc in scenarios:
        title, key, make = SCENARIOS[sc]
        for t in targets:
            values = []
            for run in range(a.runs):
                port += 1
                proc, url, extra = start(t, port, peers_dir, 1, work)
                try:
                    time.sleep(0.3)
                    r = bench(make(url, a.secs, server_pid(proc)) + extra)
                    values.append(float(r[key]))
                    log(f"{sc} {t} run {run + 1}: {key}={r[key]}"
                        + (f" lost={r.get('lost')} p99={r.get('latency_p99_us')}" if "lost" in r else ""))
                except Exception as e:  # a peer that falls over is reported, not fatal
                    log(f"{sc} {t} run {run + 1}: FAILED {e}")
                finally:
                    stop(proc)
            results[(sc, t)] = statistics.median(values) if values else None
    header = "| scenario | " + " | ".join(targets) + " | roomcast ÷ best peer | roomcast ÷ ceiling |"
    rows = [header, "|" + "---|" * (len(targets) + 3)]
    for sc in scenarios:
        title, key, _ = SCENARIOS[sc]
        cells = []
        for t in targets:
            v = results.get((sc, t))
            cells.append("failed" if v is None else fmt(v, key))
        ours = results.get((sc, "roomcast"))
        peers = [results[(sc, t)] for t in targets
                 if t not in VARIANTS and t != "ceiling" and results.get((sc, t))]
        for others in (peers, [results[(sc, "ceiling")]] if results.get((sc, "ceiling")) else []):
            if ours and others:
                best = min(others) if key == "rss_per_conn_bytes" else max(others)
                ratio = (best / ours) if key == "rss_per_conn_bytes" else (ours / best)
                cells.append(f"{ratio:.2f}×")
            else:
                cells.append("—")
        rows.append(f"| {title} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    print(table)
    if a.write:
        path = os.path.join(ROOT, "docs", "benchmarks.md")
        text = open(path).read()
        start_m, end_m = "<!-- COMPARE:BEGIN -->", "<!-- COMPARE:END -->"
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        block = (f"{start_m}\nMeasured {stamp} with `python3 benches/compare.py --runs {a.runs} --secs {a.secs:g} --write`"
                 f" (median of {a.runs}; server on CPU 0, generator on CPU 1; roomcast with `--shards 1`).\n\n"
                 f"{table}\n{end_m}")
        i, j = text.index(start_m), text.index(end_m) + len(end_m)
        open(path, "w").write(text[:i] + block + text[j:])
        log(f"updated {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
