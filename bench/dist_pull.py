#!/usr/bin/env python3
"""Daemon-side pull benchmark: `wharf pull` (wharfd's Transfer service: resolve, fetch, apply
while downloading, commit) side by side with `ctr images pull` against Debian's containerd 1.6
(which pulls client-side), each daemon on a fresh ext4 loop filesystem, for two images from a
local docker-registry: bench/pull.py's ~120 MB one-layer rootfs, and 20 layers of ~1 MB. Also
measures the limits of the big one: download alone and gunzip alone.

Run as root from the repository: `python3 bench/dist_pull.py` (RUNS, TARGET_MB as in pull.py;
builds wharfd and wharf in release mode).
"""
import gzip
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull as b  # noqa: E402  (image, registry, loop filesystem and daemon helpers)
from common import build_release, emit, start_registry  # noqa: E402


def small_layers(n=20, size=1 << 20):
    """n tars of about `size` bytes of real files from /usr/share, each gzip'd."""
    files = []
    for dirpath, dirnames, filenames in os.walk("/usr/share"):
        dirnames.sort()
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
    out, it = [], iter(files)
    for _ in range(n):
        buf, total = io.BytesIO(), 0
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            while total < size:
                p = next(it)
                try:
                    t.add(p, arcname=p.lstrip("/"), recursive=False)
                    total += os.path.getsize(p)
                except OSError:
                    continue
        raw = buf.getvalue()
        out.append((raw, gzip.compress(raw, compresslevel=6, mtime=0)))
    return out


def push_layers(host, repo, layers):
    def blob(data):
        r = urllib.request.urlopen(urllib.request.Request(f"http://{host}/v2/{repo}/blobs/uploads/", method="POST"))
        loc = r.headers["Location"]
        loc = loc if loc.startswith("http") else f"http://{host}{loc}"
        sep = "&" if "?" in loc else "?"
        urllib.request.urlopen(urllib.request.Request(f"{loc}{sep}digest={b.sha(data)}", data=data, method="PUT",
                                                      headers={"Content-Type": "application/octet-stream"}))
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                      "rootfs": {"type": "layers", "diff_ids": [b.sha(raw) for raw, _ in layers]}}).encode()
    for _, gz in layers:
        blob(gz)
    blob(cfg)
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": b.sha(cfg),
                               "size": len(cfg)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": b.sha(gz),
                                "size": len(gz)} for _, gz in layers]}).encode()
    urllib.request.urlopen(urllib.request.Request(f"http://{host}/v2/{repo}/manifests/latest", data=m, method="PUT",
                                                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))


def timed_pull(kind, exe, base, ref):
    d = tempfile.mkdtemp(dir=base)
    fs = b.LoopFs(d)
    try:
        p, sock = b.run_daemon("wharf" if kind == "wharf" else "containerd", fs.mnt)
        try:
            if kind == "wharf":
                cmd = [exe, "--address", sock, "-n", "bench", "pull", ref]
            else:
                cmd = ["ctr", "--address", sock, "-n", "bench", "images", "pull", "--plain-http", ref]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return time.perf_counter() - t0
        finally:
            p.terminate()
            p.wait(20)
    finally:
        fs.close()
        shutil.rmtree(d, ignore_errors=True)


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    build_release(b.REPO)
    exe = os.path.join(b.REPO, "target/release/wharf")
    kinds = ["wharf"] + (["containerd"] if shutil.which("containerd") else [])
    base = tempfile.mkdtemp(prefix="wharf-dist-pull-", dir="/var/tmp")
    reg, host = start_registry(base)
    res = {}
    try:
        raw, gz = b.build_layer()
        layer = b.push(host, "big", [(raw, gz)])
        push_layers(host, "small", small_layers())
        print(f"big: {len(raw) / 2**20:.0f} MiB uncompressed, {len(gz) / 2**20:.0f} MiB gzip; small: 20 x ~1 MiB")
        dl, gun = [], []
        for _ in range(b.RUNS):
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"http://{host}/v2/big/blobs/{layer}") as r:
                while r.read(1 << 20):
                    pass
            dl.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run(["gzip", "-dc"], input=gz, stdout=subprocess.DEVNULL, check=True)
            gun.append(time.perf_counter() - t0)
        for image in ["big", "small"]:
            for _ in range(b.RUNS):
                for k in kinds:
                    res.setdefault((image, k), []).append(timed_pull(k, exe, base, f"{host}/{image}:latest"))
    finally:
        reg.terminate()
        shutil.rmtree(base, ignore_errors=True)
    med = statistics.median
    print(f"machine: {os.cpu_count()} cores; {b.RUNS} runs, fresh ext4 loop root per pull")
    print(f"big, download alone:   {med(dl):.2f} s")
    print(f"big, gunzip alone:     {med(gun):.2f} s")
    for (image, k), t in res.items():
        print(f"{image:<5} {k:<19} {med(t):.2f} s  (min {min(t):.2f}, max {max(t):.2f})")
    big = med(res[("big", "wharf")])
    limit = max(med(dl), med(gun))
    print(f"big: wharf pull / max(download, gunzip): {big / limit:.2f}x")
    if "containerd" in kinds:
        for image in ["big", "small"]:
            w, c = med(res[(image, "wharf")]), med(res[(image, "containerd")])
            print(f"{image}: containerd / wharf pull: {c / w:.1f}x")
    emit("daemon-side pull (wharf pull vs ctr pull), 129 MiB image (s)", res[("big", "wharf")],
         res.get(("big", "containerd")), f"limit max(download, gunzip) = {limit:.2f} s")
    emit("daemon-side pull, 20 layers x 1 MiB (s)", res[("small", "wharf")], res.get(("small", "containerd")))


if __name__ == "__main__":
    main()
