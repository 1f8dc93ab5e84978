#!/usr/bin/env python3
"""Execution benchmark: wharfd + its own shim (libcontainer in-process) against Debian's
containerd 1.6 + containerd-shim-runc-v2 + runc, driven by the same Debian `ctr`, in one run,
alternating, each daemon on a freshly made ext4 loop filesystem.

Figures: `ctr run --rm busybox true` end to end; 50 sequential and 20 concurrent `ctr run -d ...
sleep 1000`; daemon RSS with 50 running; RSS per shim; kill+delete of 50; restart with 5 running
tasks (daemon SIGKILLed, started again: time until `ctr tasks ls` answers with all 5 RUNNING).
wharfd is also measured with Debian's runc shim (`wharf+runc`), which separates the daemon's
share from the shim's.

Run as root from the repository: `python3 bench/run.py` (builds wharf in release mode).
RUNS (default 15) sets the number of `run --rm` samples per daemon.
"""
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import busybox_image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import LoopFs, build_release, emit, sha, start_registry, wait_socket  # noqa: E402
RUNS = int(os.environ.get("RUNS", "15"))
N_SEQ = int(os.environ.get("N_SEQ", "50"))
N_CONC = int(os.environ.get("N_CONC", "20"))
WHARF_RT = "io.containerd.wharf.v2"
RUNC_RT = "io.containerd.runc.v2"
# (label, daemon, runtime)
SETUPS = [("wharf", "wharf", WHARF_RT), ("containerd+runc", "containerd", RUNC_RT), ("wharf+runc", "wharf", RUNC_RT)]


def push(host, repo):
    """Pushes the busybox image that scripts/busybox_image.py builds."""
    raw = busybox_image.layer()
    cfg = busybox_image.config(raw)
    man = busybox_image.manifest(cfg, raw)

    def blob(data):
        r = urllib.request.urlopen(urllib.request.Request(f"http://{host}/v2/{repo}/blobs/uploads/", method="POST"))
        loc = r.headers["Location"]
        loc = loc if loc.startswith("http") else f"http://{host}{loc}"
        sep = "&" if "?" in loc else "?"
        urllib.request.urlopen(urllib.request.Request(f"{loc}{sep}digest={sha(data)}", data=data, method="PUT",
                                                      headers={"Content-Type": "application/octet-stream"}))
    blob(raw)
    blob(cfg)
    urllib.request.urlopen(urllib.request.Request(f"http://{host}/v2/{repo}/manifests/latest", data=man, method="PUT",
                                                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def shims_of(sock):
    """pids of the shim processes started by the daemon on `sock`."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if args and b"containerd-shim" in args[0] and sock.encode() in args:
            out.append(int(pid))
    return out


class Daemon:
    def __init__(self, kind, d):
        self.kind, self.d = kind, d
        self.sock = os.path.join(d, "d.sock")
        self.p = None

    def cmd(self):
        d = self.d
        if self.kind == "wharf":
            open(f"{d}/none.toml", "w").close()
            return [os.path.join(REPO, "target/release/wharfd"), "--root", f"{d}/root", "--state", f"{d}/state",
                    "--address", self.sock, "--config", f"{d}/none.toml", "--log-level", "warn"]
        with open(f"{d}/c.toml", "w") as f:
            f.write("version = 2\n")
        return ["containerd", "--root", f"{d}/root", "--state", f"{d}/state", "--address", self.sock, "--config",
                f"{d}/c.toml", "--log-level", "warn"]

    def start(self):
        t0 = time.perf_counter()
        self.p = subprocess.Popen(self.cmd(), stdout=subprocess.DEVNULL, stderr=open(f"{self.d}/log", "a"))
        wait_socket(self.sock, self.p)
        return time.perf_counter() - t0

    def ctr(self, *args, check=True):
        return subprocess.run(["ctr", "--address", self.sock, "-n", "bench", *args], check=check,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def kill9(self):
        self.p.kill()
        self.p.wait()

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def running(dm, ids):
    out = dm.ctr("tasks", "ls", check=False)
    if out.returncode != 0:
        return False
    st = {l.split()[0]: l.split()[2] for l in out.stdout.decode().splitlines()[1:] if len(l.split()) >= 3}
    return all(st.get(i) == "RUNNING" for i in ids)


def bench_setup(label, kind, rt, host, base, res):
    d = tempfile.mkdtemp(dir=base)
    fs = LoopFs(d, "2G")
    dm = Daemon(kind, fs.mnt)
    r = res.setdefault(label, {})
    try:
        dm.start()
        time.sleep(0.3)
        ref = f"{host}/busybox:latest"
        dm.ctr("images", "pull", "--plain-http", ref)
        run = ["run", "--runtime", rt]
        dm.ctr(*run, "--rm", ref, "warm", "true")
        xs, cpu = [], []
        for i in range(RUNS):
            u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            dm.ctr(*run, "--rm", ref, f"t{i}", "true")
            xs.append((time.perf_counter() - t0) * 1000)
            u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append((u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime) * 1000)
        r["run --rm true (ms)"] = xs
        # The client's own share: ctr's CPU time (user + system) per run, the same binary
        # against either daemon; with its ~30 sequential round trips, a floor no daemon removes.
        r["ctr's own CPU time per run --rm (ms)"] = cpu
        time.sleep(3.0)  # idle: wharfd gives back its start-up pages after 2 s
        r["daemon idle RSS after a pull and runs (MiB)"] = [rss_kib(dm.p.pid) / 1024]

        t0 = time.perf_counter()
        for i in range(N_SEQ):
            dm.ctr(*run, "-d", ref, f"s{i}", "sleep", "1000")
        r[f"{N_SEQ} sequential run -d (s)"] = [time.perf_counter() - t0]
        time.sleep(1.0)
        r[f"daemon RSS, {N_SEQ} running (MiB)"] = [rss_kib(dm.p.pid) / 1024]
        shims = shims_of(dm.sock)
        r["RSS per shim (MiB)"] = [statistics.mean(rss_kib(p) for p in shims) / 1024] if shims else [0]
        r["PSS per shim (MiB)"] = [statistics.mean(pss_kib(p) for p in shims) / 1024] if shims else [0]

        t0 = time.perf_counter()
        for i in range(N_SEQ):
            dm.ctr("tasks", "kill", "-s", "SIGKILL", f"s{i}")
        for i in range(N_SEQ):
            for _ in range(200):
                if dm.ctr("tasks", "rm", f"s{i}", check=False).returncode == 0:
                    break
                time.sleep(0.01)
            dm.ctr("containers", "rm", f"s{i}")
        r[f"kill+delete {N_SEQ} (s)"] = [time.perf_counter() - t0]

        errs = []

        def one(i):
            out = dm.ctr(*run, "-d", ref, f"c{i}", "sleep", "1000", check=False)
            if out.returncode != 0:
                errs.append(out.stderr.decode())
        t0 = time.perf_counter()
        th = [threading.Thread(target=one, args=(i,)) for i in range(N_CONC)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        r[f"{N_CONC} concurrent run -d (s)"] = [time.perf_counter() - t0]
        if errs:
            print(f"{label}: {len(errs)} concurrent runs failed: {errs[0]}")

        # Restart with 5 running tasks: c0..c4 stay, the rest go.
        for i in range(5, N_CONC):
            dm.ctr("tasks", "kill", "-s", "SIGKILL", f"c{i}", check=False)
        for i in range(5, N_CONC):
            for _ in range(200):
                if dm.ctr("tasks", "rm", f"c{i}", check=False).returncode == 0:
                    break
                time.sleep(0.01)
            dm.ctr("containers", "rm", f"c{i}", check=False)
        keep = [f"c{i}" for i in range(5)]
        dm.kill9()
        t0 = time.perf_counter()
        dm.start()
        t_sock = time.perf_counter() - t0
        while not running(dm, keep):
            if time.perf_counter() - t0 > 30:
                raise RuntimeError(f"{label}: tasks not RUNNING after restart")
            time.sleep(0.001)
        r["restart, 5 running -> API (ms)"] = [t_sock * 1000]
        r["restart -> 5 tasks RUNNING (ms)"] = [(time.perf_counter() - t0) * 1000]
        for i in range(5):
            dm.ctr("tasks", "kill", "-s", "SIGKILL", f"c{i}", check=False)
        for i in range(5):
            for _ in range(200):
                if dm.ctr("tasks", "rm", f"c{i}", check=False).returncode == 0:
                    break
                time.sleep(0.01)
            dm.ctr("containers", "rm", f"c{i}", check=False)
    finally:
        teardown(dm, fs, d)


def teardown(dm, fs, d):
    """Stops a benchmarked daemon and removes everything it left: its shims, the mounts on its
    loop filesystem, the filesystem and the directory."""
    try:
        dm.stop()
    except Exception:
        pass
    for p in shims_of(dm.sock):
        try:
            os.kill(p, 9)
        except OSError:
            pass
    subprocess.run(["sh", "-c", f"grep -o ' {fs.mnt}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"])
    fs.close()
    shutil.rmtree(d, ignore_errors=True)


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    build_release(REPO)
    setups = [s for s in SETUPS if s[1] == "wharf" or shutil.which("containerd")]
    base = tempfile.mkdtemp(prefix="wharf-run-", dir="/var/tmp")
    reg, host = start_registry(base)
    res = {}
    try:
        push(host, "busybox")
        for label, kind, rt in setups:
            bench_setup(label, kind, rt, host, base, res)
    finally:
        reg.terminate()
        shutil.rmtree(base, ignore_errors=True)

    for key in res["wharf"]:
        emit(key, res["wharf"][key], res.get("containerd+runc", {}).get(key))
    if "wharf+runc" in res:
        key = "run --rm true (ms)"
        emit("run --rm true, wharfd + Debian's runc shim (ms)", res["wharf+runc"][key],
             res.get("containerd+runc", {}).get(key), "same shim and runc as containerd: the daemon's share")
    labels = [s[0] for s in setups]
    print(f"\nmachine: {os.cpu_count()} cores, kernel {os.uname().release}; run --rm x{RUNS}; "
          f"fresh ext4 loop root per daemon")
    print(f"{'figure':<34}" + "".join(f"{l:>26}" for l in labels) + "   wharf/containerd")
    for key in res[labels[0]]:
        cells = []
        for l in labels:
            xs = res.get(l, {}).get(key)
            if not xs:
                cells.append(f"{'n/a':>26}")
            elif len(xs) > 1:
                cells.append(f"{statistics.median(xs):>10.1f} ({min(xs):.1f}-{max(xs):.1f})".rjust(26))
            else:
                cells.append(f"{xs[0]:>26.2f}")
        ratio = ""
        if "containerd+runc" in res and key in res["containerd+runc"]:
            a = statistics.median(res["wharf"][key])
            b = statistics.median(res["containerd+runc"][key])
            if b:
                ratio = f"{a / b:>10.2f}x"
        print(f"{key:<34}" + "".join(cells) + ratio)


if __name__ == "__main__":
    main()
