#!/usr/bin/env python3
"""Daemon-side pull benchmark (wharf-distribution): the same ~120 MB one-layer image as
bench/pull.py, pulled by the `pull` example of crates/distribution (resolve, fetch, apply while
downloading, commit) into a fresh root, against the limits: download alone and gunzip alone.

Run as root from the repository: `python3 bench/dist_pull.py` (RUNS, TARGET_MB as in pull.py).
The example is a dev build (workspace crates unoptimised, dependencies at opt-level 2).
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull as b  # noqa: E402  (the image and registry helpers)


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    subprocess.run(["cargo", "build", "-p", "wharf-distribution", "--example", "pull"], cwd=b.REPO, check=True)
    exe = os.path.join(b.REPO, "target/debug/examples/pull")
    base = tempfile.mkdtemp(prefix="wharf-dist-pull-", dir="/var/tmp")
    port = b.free_port()
    with open(f"{base}/reg.yml", "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {base}/reg\nhttp:\n  addr: 127.0.0.1:{port}\n")
    reg = subprocess.Popen(["docker-registry", "serve", f"{base}/reg.yml"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    host = f"127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://{host}/v2/")
                break
            except Exception:
                time.sleep(0.05)
        raw, gz = b.build_layer()
        layer = b.push(host, "big", raw, gz)
        print(f"image: {len(raw) / 2**20:.0f} MiB uncompressed, {len(gz) / 2**20:.0f} MiB gzip")
        dl, gun, pulls = [], [], []
        for _ in range(b.RUNS):
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"http://{host}/v2/big/blobs/{layer}") as r:
                while r.read(1 << 20):
                    pass
            dl.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run(["gzip", "-dc"], input=gz, stdout=subprocess.DEVNULL, check=True)
            gun.append(time.perf_counter() - t0)
            d = tempfile.mkdtemp(dir=base)
            t0 = time.perf_counter()
            subprocess.run([exe, d, f"{host}/big:latest"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            pulls.append(time.perf_counter() - t0)
            shutil.rmtree(d, ignore_errors=True)
    finally:
        reg.terminate()
        shutil.rmtree(base, ignore_errors=True)
    med = statistics.median
    print(f"machine: {os.cpu_count()} cores; {b.RUNS} runs, root on /var/tmp")
    print(f"download alone:          {med(dl):.2f} s")
    print(f"gunzip alone:            {med(gun):.2f} s")
    print(f"wharf-distribution pull: {med(pulls):.2f} s  (min {min(pulls):.2f}, max {max(pulls):.2f})")
    print(f"pull / max(download, gunzip): {med(pulls) / max(med(dl), med(gun)):.2f}x")


if __name__ == "__main__":
    main()
