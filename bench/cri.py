#!/usr/bin/env python3
"""CRI benchmark: wharfd's CRI service against Debian containerd 1.6's CRI plugin (+ runc), both
driven by the same client (bench/cri-bench, a Rust CRI client), each daemon on a freshly made
ext4 loop filesystem, pods on the same CNI bridge network (Debian's plugins in /usr/lib/cni).

Figures: RunPodSandbox + CreateContainer + StartContainer of busybox `sleep` (RUNS samples, each
in a pod of its own; issue 7's target: at most 1/3 of containerd's time) and ListContainers
with 100 running containers (LISTS samples; target: at most 5 ms); printed too, not in the
results table: each RPC's part, the last 10 StartContainers of 100 in one pod, and
ListContainerStats with 100 running (kubelet's stats call every few seconds).

No registry: busybox (scripts/busybox_image.py) is imported with `ctr -n k8s.io images import`
into each daemon; containerd's sandbox image is wharf's built-in pause image, exported from
wharfd (which imports it on its first CRI call) and imported into containerd under the same
name, set as its `sandbox_image`.

Run as root from the repository: `python3 bench/cri.py` (builds wharf in release mode;
CARGO_TARGET_DIR is honoured). RUNS (default 10), LISTS (default 50), CONTAINERS (default 100),
PROFILE (default release); NO_BUILD=1 uses the binaries already built.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PROFILE, LoopFs, bin_path, emit, wait_socket  # noqa: E402
from run import teardown  # noqa: E402

RUNS = int(os.environ.get("RUNS", "10"))
LISTS = int(os.environ.get("LISTS", "50"))
CONTAINERS = int(os.environ.get("CONTAINERS", "100"))
BUSYBOX = "docker.io/library/busybox:latest"
# Unique per run: other processes on the machine may have bridges and subnets of their own.
BRIDGE = f"cribench{os.getpid() % 10000}"
SUBNET = f"10.251.{os.getpid() % 250}.0/24"


def net_conf(d):
    """The one CNI network both daemons put their pods on."""
    os.makedirs(f"{d}/net.d", exist_ok=True)
    conf = {"cniVersion": "1.0.0", "name": BRIDGE, "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": f"{d}/ipam"}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    with open(f"{d}/net.d/10-bench.conflist", "w") as f:
        json.dump(conf, f)


class Daemon:
    def __init__(self, kind, d, pause=None):
        self.kind, self.d, self.pause = kind, d, pause
        self.sock = os.path.join(d, "d.sock")
        self.p = None

    def cmd(self):
        d = self.d
        if self.kind == "wharf":
            with open(f"{d}/wharf.toml", "w") as f:
                f.write(f'[cri]\ncni_conf_dir = "{d}/net.d"\ncni_bin_dirs = ["/usr/lib/cni"]\n')
            return [bin_path("wharfd"), "--root", f"{d}/root", "--state", f"{d}/state", "--address", self.sock,
                    "--config", f"{d}/wharf.toml", "--log-level", "warn"]
        # restrict_oom_score_adj: this machine lacks CAP_SYS_RESOURCE (research/machine.md).
        with open(f"{d}/c.toml", "w") as f:
            f.write(f"""version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.pause}"
  restrict_oom_score_adj = true
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"
""")
        return ["containerd", "--root", f"{d}/root", "--state", f"{d}/state", "--address", self.sock, "--config",
                f"{d}/c.toml", "--log-level", "warn"]

    def start(self):
        self.p = subprocess.Popen(self.cmd(), stdout=subprocess.DEVNULL, stderr=open(f"{self.d}/log", "a"))
        wait_socket(self.sock, self.p)

    def ctr(self, *args):
        return subprocess.run(["ctr", "--address", self.sock, "-n", "k8s.io", *args], check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def log(self):
        try:
            return open(f"{self.d}/log").read()[-2000:]
        except OSError:
            return ""

    def stop(self):
        if self.p is None:
            return
        self.p.terminate()
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def cri_bench(dm):
    out = subprocess.run([bin_path("cri-bench"), "--endpoint", dm.sock, "--image", BUSYBOX, "--runs", str(RUNS),
                          "--containers", str(CONTAINERS), "--lists", str(LISTS), "--log-dir", f"{dm.d}/logs"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cri-bench against {dm.kind} failed: {out.stderr[-2000:]}\ndaemon log: {dm.log()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_daemon(kind, base, busybox_tar, pause=None):
    """Runs cri-bench against one daemon; returns (figures, the pause image tarball when wharf)."""
    d = tempfile.mkdtemp(dir=base)
    fs = LoopFs(d, "3G")
    dm = Daemon(kind, fs.mnt, pause[0] if pause else None)
    exported = None
    try:
        net_conf(fs.mnt)
        dm.start()
        dm.ctr("images", "import", busybox_tar)
        if pause:
            dm.ctr("images", "import", pause[1])
        res = cri_bench(dm)
        if kind == "wharf":
            names = dm.ctr("images", "ls", "-q").stdout.decode().split()
            name = next((n for n in names if n.startswith("wharf.local/pause:")), None)
            if name:
                exported = (name, os.path.join(base, "pause.tar"))
                dm.ctr("images", "export", exported[1], name)
        return res, exported
    finally:
        teardown(dm, fs, d)


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    if not os.environ.get("NO_BUILD"):
        release = ["--release"] if PROFILE == "release" else []
        # The whole workspace, as the other bench scripts build it (a different package set
        # would rebuild shared crates).
        subprocess.run(["cargo", "build", *release, "--workspace"], cwd=REPO, check=True)
    base = tempfile.mkdtemp(prefix="wharf-cri-", dir="/var/tmp")
    res = {}
    try:
        busybox_tar = os.path.join(base, "busybox.tar")
        subprocess.run([sys.executable, os.path.join(REPO, "scripts/busybox_image.py"), busybox_tar], check=True)
        res["wharf"], pause = bench_daemon("wharf", base, busybox_tar)
        if shutil.which("containerd") and pause:
            try:
                res["containerd"], _ = bench_daemon("containerd", base, busybox_tar, pause)
            except Exception as e:  # its figures are missing; say why
                print(f"containerd: {e}")
    finally:
        subprocess.run(["ip", "link", "del", BRIDGE], stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)

    figures = [("CRI RunPodSandbox+CreateContainer+StartContainer (ms)", "pod_create_start_ms",
                "busybox sleep, own pod each, CNI bridge; target <= 0.33x"),
               (f"CRI ListContainers, {CONTAINERS} running (ms)", "list_containers_ms", "target <= 5 ms")]
    # Where pod+create+start goes, call by call (not emitted to the results table).
    parts = [("  of which RunPodSandbox (ms)", "run_pod_sandbox_ms", ""),
             ("  of which CreateContainer (ms)", "create_container_ms", ""),
             ("  of which StartContainer (ms)", "start_container_ms", ""),
             (f"StartContainer, the last 10 of {CONTAINERS} (ms)", "late_start_container_ms", ""),
             (f"ListContainerStats, {CONTAINERS} running (ms)", "list_container_stats_ms", "")]
    w, c = res.get("wharf", {}), res.get("containerd", {})
    for label, key, note in figures:
        emit(label, w.get(key), c.get(key), note)
    print(f"\nmachine: {os.cpu_count()} cores, kernel {os.uname().release}; {RUNS} pods, {LISTS} lists; "
          "fresh ext4 loop root per daemon")
    print(f"{'figure':<58}{'wharf':>26}{'containerd':>26}   wharf/containerd")
    for label, key, _ in figures[:1] + parts + figures[1:]:
        cells = []
        for r in (w, c):
            xs = r.get(key)
            cells.append(f"{statistics.median(xs):>10.1f} ({min(xs):.1f}-{max(xs):.1f})".rjust(26) if xs
                         else f"{'n/a':>26}")
        ratio = ""
        if w.get(key) and c.get(key):
            ratio = f"{statistics.median(w[key]) / statistics.median(c[key]):>10.2f}x"
        print(f"{label:<58}" + "".join(cells) + ratio)


if __name__ == "__main__":
    main()
