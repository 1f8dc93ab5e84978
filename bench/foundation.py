#!/usr/bin/env python3
"""Foundation benchmark: daemon start -> API answering, idle RSS, and Content/Write ingest
throughput, for wharfd and (when installed) Debian's containerd 1.6 in the same run, alternating.
Ingest is measured twice: with `ctr content ingest`, which waits for the answer to each 1 MiB
chunk, and with bench/cri-bench's `ingest-bench`, which keeps 4 chunks in flight; the latter also
times the floor, SHA-256 + write + fsync of the same bytes to the same filesystem, once plainly
(the issue's floor) and once starting the disk writes every 4 MiB as wharfd's store does.

Run as root from the repository: `python3 bench/foundation.py` (builds wharfd in release mode).
Prints one table of medians (min-max) and the wharf/containerd ratio.
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bin_path, build_release, emit  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "15"))
INGEST_MIB = int(os.environ.get("INGEST_MIB", "512"))


def wait_socket(path, proc, timeout=10.0):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited: {proc.returncode}")
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.close()
            return
        except OSError:
            time.sleep(0.0005)
    raise RuntimeError("daemon did not answer")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(kind, d):
    sock = os.path.join(d, "d.sock")
    if kind == "wharf":
        cmd = [os.path.join(REPO, "target/release/wharfd"), "--root", f"{d}/root", "--state", f"{d}/state",
               "--address", sock, "--config", f"{d}/none.toml", "--log-level", "warn"]
        open(f"{d}/none.toml", "w").close()
    else:
        cfg = f"{d}/containerd.toml"
        with open(cfg, "w") as f:
            f.write("version = 2\n")
        cmd = ["containerd", "--root", f"{d}/root", "--state", f"{d}/state", "--address", sock, "--config", cfg,
               "--log-level", "warn"]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(f"{d}/log", "w"))
    wait_socket(sock, p)
    return p, sock, (time.perf_counter() - t0) * 1000


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def ingest(sock, path, ref):
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        subprocess.run(["ctr", "--address", sock, "-n", "bench", "content", "ingest", ref], stdin=f, check=True,
                       stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def ingest_pipelined(sock, path, base):
    """MiB/s of one pipelined ingest, and of the two floors right after it."""
    out = subprocess.run([bin_path("ingest-bench"), "--endpoint", sock, "--file", path, "--runs", "1",
                          "--floor-dir", base], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)
    return r["mib_per_s"][0], r["floor_mib_per_s"][0], r["floor_early_mib_per_s"][0]


def med(xs):
    return statistics.median(xs), min(xs), max(xs)


def fmt(x, unit):
    m, lo, hi = x
    return f"{m:8.1f} {unit} ({lo:.1f}-{hi:.1f})"


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    build_release(REPO)
    kinds = ["wharf"] + (["containerd"] if shutil.which("containerd") else [])
    base = tempfile.mkdtemp(prefix="wharf-bench-", dir="/var/tmp")
    res = {k: {"start": [], "rss": [], "ingest": [], "pipelined": []} for k in kinds}
    floor, floor_early = [], []
    data = os.path.join(base, "blob")
    with open(data, "wb") as f:
        for _ in range(INGEST_MIB):
            f.write(os.urandom(1 << 20))
    try:
        for i in range(RUNS):
            for k in kinds:  # alternate A/B so drift hits both alike
                d = tempfile.mkdtemp(dir=base)
                p, sock, ms = start(k, d)
                res[k]["start"].append(ms)
                time.sleep(3.0)  # idle: wharfd gives back its start-up pages after 2 s
                res[k]["rss"].append(rss_kib(p.pid) / 1024)
                if i < 3:
                    secs = ingest(sock, data, f"r{i}")
                    res[k]["ingest"].append(INGEST_MIB / secs)
                    mib_s, fl, fle = ingest_pipelined(sock, data, base)
                    res[k]["pipelined"].append(mib_s)
                    floor.append(fl)
                    floor_early.append(fle)
                stop(p)
                shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(f"\nmachine: {os.cpu_count()} cores, kernel {os.uname().release}; {RUNS} runs, ingest {INGEST_MIB} MiB x3")
    print(f"{'figure':<28}" + "".join(f"{k:>34}" for k in kinds) + ("      ratio" if len(kinds) > 1 else ""))
    rows = [("start -> socket answering", "start", "ms"), ("idle RSS", "rss", "MiB"), ("ctr content ingest", "ingest", "MiB/s"),
            ("ingest, 4 chunks in flight", "pipelined", "MiB/s")]
    for label, key, unit in rows:
        line = f"{label:<28}" + "".join(f"{fmt(med(res[k][key]), unit):>34}" for k in kinds)
        if len(kinds) > 1:
            line += f"   {statistics.median(res['wharf'][key]) / statistics.median(res['containerd'][key]):8.2f}x"
        print(line)
    print(f"{'sha256 + write + fsync floor':<28}{fmt(med(floor), 'MiB/s'):>34}")
    print(f"{'  same, writeback started':<28}{fmt(med(floor_early), 'MiB/s'):>34}")
    c = res.get("containerd", {})
    emit("daemon start -> API answering (ms)", res["wharf"]["start"], c.get("start"))
    emit("daemon idle RSS (MiB)", res["wharf"]["rss"], c.get("rss"))
    fl = statistics.median(floor)
    emit("ctr content ingest (MiB/s, higher is better)", res["wharf"]["ingest"], c.get("ingest"),
         f"floor (sha256+write+fsync) {fl:.0f} MiB/s; ctr waits for each 1 MiB answer")
    w = statistics.median(res["wharf"]["pipelined"])
    emit("Content/Write ingest, 4 chunks in flight (MiB/s, higher is better)", res["wharf"]["pipelined"],
         c.get("pipelined"), f"floor {fl:.0f} MiB/s: wharf at {fl / w:.2f}x the floor's time; target <= 1.3x")
    fle = statistics.median(floor_early)
    print(f"wharf pipelined ingest vs floor: {fl / w:.2f}x the time of hashing+writing alone "
          f"(ctr: {fl / statistics.median(res['wharf']['ingest']):.2f}x); "
          f"{fle / w:.2f}x that floor with writeback started on the way")


if __name__ == "__main__":
    main()
