#!/usr/bin/env python3
"""Foundation benchmark: daemon start -> API answering, idle RSS, and Content/Write ingest
throughput, for wharfd and (when installed) Debian's containerd 1.6 in the same run, alternating.

Run as root from the repository: `python3 bench/foundation.py` (builds wharfd in release mode).
Prints one table of medians (min-max) and the wharf/containerd ratio.
"""
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import build_release, emit  # noqa: E402

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
    res = {k: {"start": [], "rss": [], "ingest": []} for k in kinds}
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
                stop(p)
                shutil.rmtree(d, ignore_errors=True)
        # The floor for ingest: hashing plus writing the same bytes to the same filesystem.
        floor = []
        for _ in range(3):
            t0 = time.perf_counter()
            h = hashlib.sha256()
            with open(data, "rb") as f, open(os.path.join(base, "copy"), "wb") as out:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
                    out.write(b)
                out.flush()
                os.fsync(out.fileno())
            floor.append(INGEST_MIB / (time.perf_counter() - t0))
            os.unlink(os.path.join(base, "copy"))
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(f"\nmachine: {os.cpu_count()} cores, kernel {os.uname().release}; {RUNS} runs, ingest {INGEST_MIB} MiB x3")
    print(f"{'figure':<28}" + "".join(f"{k:>34}" for k in kinds) + ("      ratio" if len(kinds) > 1 else ""))
    rows = [("start -> socket answering", "start", "ms"), ("idle RSS", "rss", "MiB"), ("ctr content ingest", "ingest", "MiB/s")]
    for label, key, unit in rows:
        line = f"{label:<28}" + "".join(f"{fmt(med(res[k][key]), unit):>34}" for k in kinds)
        if len(kinds) > 1:
            line += f"   {statistics.median(res['wharf'][key]) / statistics.median(res['containerd'][key]):8.2f}x"
        print(line)
    print(f"{'sha256 + write + fsync floor':<28}{fmt(med(floor), 'MiB/s'):>34}")
    c = res.get("containerd", {})
    emit("daemon start -> API answering (ms)", res["wharf"]["start"], c.get("start"))
    emit("daemon idle RSS (MiB)", res["wharf"]["rss"], c.get("rss"))
    emit("ctr content ingest (MiB/s, higher is better)", res["wharf"]["ingest"], c.get("ingest"),
         f"sha256+write+fsync floor {statistics.median(floor):.0f} MiB/s")
    w = statistics.median(res["wharf"]["ingest"])
    print(f"wharf ingest vs floor: {statistics.median(floor) / w:.2f}x slower than hashing+writing alone")


if __name__ == "__main__":
    main()
