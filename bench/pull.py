#!/usr/bin/env python3
"""Pull benchmark: `ctr images pull` from a local docker-registry of three images — busybox (one
layer: /bin/busybox and its applets), a multi-layer image (8 layers of small files, whiteouts
and links) and a ~120 MB rootfs image (one gzip layer built from this machine's /usr) — against
wharfd and Debian's containerd 1.6 in the same run, alternating, each on a freshly made ext4 loop
filesystem (the VM's root filesystem slows down with every create/delete cycle). Also measures the
limits of the large one: download alone and gunzip alone.

Run as root from the repository: `python3 bench/pull.py`.
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
from common import LoopFs, build_release, emit, sha, start_registry, wait_socket  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "5"))
TARGET_MB = int(os.environ.get("TARGET_MB", "120"))


def build_layer():
    """A tar of real files from /usr (binaries, libraries, text) up to TARGET_MB uncompressed."""
    buf = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for top in ["/usr/lib", "/usr/share", "/usr/bin"]:
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                for f in sorted(filenames):
                    p = os.path.join(dirpath, f)
                    try:
                        st = os.lstat(p)
                        if not (os.path.isfile(p) or os.path.islink(p)):
                            continue
                        t.add(p, arcname=p.lstrip("/"), recursive=False)
                        total += st.st_size if os.path.isfile(p) and not os.path.islink(p) else 0
                    except OSError:
                        continue
                    if total >= TARGET_MB << 20:
                        break
                if total >= TARGET_MB << 20:
                    break
            if total >= TARGET_MB << 20:
                break
    raw = buf.getvalue()
    return raw, gzip.compress(raw, compresslevel=6, mtime=0)


def tar_of(entries):
    """A tar from (path, kind, data) entries: kind "f" file, "d" dir, "l" symlink to data."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, kind, data in entries:
            ti = tarfile.TarInfo(path)
            ti.mtime = 0
            if kind == "d":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            elif kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                t.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o755
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def busybox_layers():
    bb = open("/bin/busybox", "rb").read()
    entries = [("bin", "d", b""), ("bin/busybox", "f", bb), ("etc", "d", b""),
               ("etc/passwd", "f", b"root:x:0:0:root:/root:/bin/sh\n")]
    entries += [(f"bin/{a}", "l", "busybox") for a in ["sh", "ls", "cat", "echo", "sleep", "true"]]
    raw = tar_of(entries)
    return [(raw, gzip.compress(raw, compresslevel=6, mtime=0))]


def multilayer_layers(n=8, files=200):
    """n layers of `files` small files each, later layers replacing and deleting earlier ones."""
    out = []
    for i in range(n):
        entries = [(f"data{i}", "d", b"")]
        entries += [(f"data{i}/f{j}", "f", os.urandom(1024) + bytes(3072)) for j in range(files)]
        if i > 0:
            entries.append((f"data{i - 1}/.wh.f0", "f", b""))
            entries.append((f"link{i}", "l", f"data{i}/f1"))
        raw = tar_of(entries)
        out.append((raw, gzip.compress(raw, compresslevel=6, mtime=0)))
    return out


def push(host, repo, layers):
    """Pushes a manifest of `layers` [(raw, gz)] as repo:latest; returns the first layer digest."""
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                      "rootfs": {"type": "layers", "diff_ids": [sha(raw) for raw, _ in layers]}}).encode()
    def blob(data):
        r = urllib.request.urlopen(urllib.request.Request(f"http://{host}/v2/{repo}/blobs/uploads/", method="POST"))
        loc = r.headers["Location"]
        loc = loc if loc.startswith("http") else f"http://{host}{loc}"
        sep = "&" if "?" in loc else "?"
        urllib.request.urlopen(urllib.request.Request(f"{loc}{sep}digest={sha(data)}", data=data, method="PUT",
                                                      headers={"Content-Type": "application/octet-stream"}))
    for _, gz in layers:
        blob(gz)
    blob(cfg)
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg), "size": len(cfg)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(gz),
                                "size": len(gz)} for _, gz in layers]}).encode()
    urllib.request.urlopen(urllib.request.Request(f"http://{host}/v2/{repo}/manifests/latest", data=m, method="PUT",
                                                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
    return sha(layers[0][1])


def run_daemon(kind, d):
    sock = os.path.join(d, "d.sock")
    if kind == "wharf":
        open(f"{d}/none.toml", "w").close()
        cmd = [os.path.join(REPO, "target/release/wharfd"), "--root", f"{d}/root", "--state", f"{d}/state",
               "--address", sock, "--config", f"{d}/none.toml", "--log-level", os.environ.get("WHARF_LOG", "warn")]
    else:
        with open(f"{d}/c.toml", "w") as f:
            f.write("version = 2\n")
        cmd = ["containerd", "--root", f"{d}/root", "--state", f"{d}/state", "--address", sock, "--config",
               f"{d}/c.toml", "--log-level", "warn"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(f"{d}/log", "w"))
    wait_socket(sock, p)
    time.sleep(0.3)  # let start-up work (GC) settle
    return p, sock


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    build_release(REPO)
    kinds = ["wharf"] + (["containerd"] if shutil.which("containerd") else [])
    base = tempfile.mkdtemp(prefix="wharf-pull-", dir="/var/tmp")
    reg, host = start_registry(base)
    try:
        raw, gz = build_layer()
        layer = push(host, "big", [(raw, gz)])
        push(host, "busybox", busybox_layers())
        ml = multilayer_layers()
        push(host, "multilayer", ml)
        print(f"image: {len(raw) / 2**20:.0f} MiB uncompressed, {len(gz) / 2**20:.0f} MiB gzip")
        dl, gun = [], []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"http://{host}/v2/big/blobs/{layer}") as r:
                while r.read(1 << 20):
                    pass
            dl.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run(["gzip", "-dc"], input=gz, stdout=subprocess.DEVNULL, check=True)
            gun.append(time.perf_counter() - t0)
        res = {k: [] for k in kinds}
        small = {(img, k): [] for img in ["busybox", "multilayer"] for k in kinds}
        for i in range(RUNS):
            for k in kinds:
                d = tempfile.mkdtemp(dir=base)
                fs = LoopFs(d)
                try:
                    p, sock = run_daemon(k, fs.mnt)
                    # Each image into a fresh store: the small ones share nothing with the big one.
                    for img in ["busybox", "multilayer"]:
                        t0 = time.perf_counter()
                        subprocess.run(["ctr", "--address", sock, "-n", f"bench-{img}", "images", "pull",
                                        "--plain-http", f"{host}/{img}:latest"], check=True, stdout=subprocess.DEVNULL)
                        small[(img, k)].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    subprocess.run(["ctr", "--address", sock, "-n", "bench", "images", "pull", "--plain-http",
                                    f"{host}/big:latest"], check=True, stdout=subprocess.DEVNULL)
                    res[k].append(time.perf_counter() - t0)
                    p.terminate()
                    p.wait(20)
                    if os.environ.get("WHARF_LOG") and k == "wharf":
                        print("\n".join(l for l in open(f"{fs.mnt}/log") if "wharf" in l and "h2" not in l)[-4000:])
                finally:
                    fs.close()
                    shutil.rmtree(d, ignore_errors=True)
    finally:
        reg.terminate()
        shutil.rmtree(base, ignore_errors=True)

    med = statistics.median
    print(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}; {RUNS} runs, fresh ext4 loop root per run")
    print(f"download alone (HTTP GET of the layer):  {med(dl):.2f} s")
    print(f"gunzip alone (gzip -dc):                 {med(gun):.2f} s")
    for k in kinds:
        print(f"ctr images pull via {k:<11}          {med(res[k]):.2f} s  (min {min(res[k]):.2f}, max {max(res[k]):.2f})")
    for img, what in [("busybox", "busybox, 1 layer"), ("multilayer", f"multi-layer, {len(ml)} layers")]:
        w = small[(img, "wharf")]
        c = small.get((img, "containerd"))
        print(f"ctr images pull {img:<11} via wharf {med(w):.3f} s" + (f", containerd {med(c):.3f} s" if c else ""))
        emit(f"ctr images pull, {what} (s)", w, c if c else None, "fresh store")
    limit = max(med(dl), med(gun))
    emit(f"ctr images pull, {len(raw) >> 20} MiB image (s)", res["wharf"], res.get("containerd"),
         f"limit max(download, gunzip) = {limit:.2f} s")
    print(f"wharf / max(download, gunzip):           {med(res['wharf']) / limit:.2f}x")
    if "containerd" in res:
        print(f"wharf / containerd:                      {med(res['wharf']) / med(res['containerd']):.2f}x "
              f"(containerd is {med(res['containerd']) / med(res['wharf']):.1f}x slower)")


if __name__ == "__main__":
    main()
