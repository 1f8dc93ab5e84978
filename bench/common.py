"""Shared by the bench scripts: figures go to the file named by BENCH_JSON (one JSON object per
line) so that bench/compare.py can print them all as one table."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(_REPO, "target")
# "debug" measures a dev build (slower wharf; for trying the script out, not for the record).
PROFILE = os.environ.get("PROFILE", "release")


def bin_path(name):
    """A binary of this workspace's build."""
    return os.path.join(TARGET, PROFILE, name)


def build_release(repo):
    """One build command for every script: building different package sets in turn would
    rebuild shared crates each time (features unify differently), minutes per script."""
    subprocess.run(["cargo", "build", "--release", "--workspace"], cwd=repo, check=True)


def emit(figure, wharf, containerd=None, note=""):
    """One figure: lists of samples (or a single value) for each daemon; None = not measured."""
    path = os.environ.get("BENCH_JSON")
    if not path:
        return

    def samples(x):
        if x is None:
            return None
        return list(x) if isinstance(x, (list, tuple)) else [x]
    with open(path, "a") as f:
        f.write(json.dumps({"figure": figure, "wharf": samples(wharf), "containerd": samples(containerd),
                            "note": note, "script": os.path.basename(sys.argv[0])}) + "\n")


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_socket(path, proc, timeout=20.0):
    """Waits until a daemon answers on its unix socket (fails if it exits first)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("daemon exited")
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.close()
            return
        except OSError:
            time.sleep(0.0005)
    raise RuntimeError("daemon did not start")


def start_registry(base):
    """Debian's docker-registry on a free 127.0.0.1 port, storing under `base`; returns
    (process, host) once it answers."""
    port = free_port()
    with open(f"{base}/reg.yml", "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {base}/reg\nhttp:\n  addr: 127.0.0.1:{port}\n")
    reg = subprocess.Popen(["docker-registry", "serve", f"{base}/reg.yml"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    host = f"127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://{host}/v2/")
            break
        except Exception:
            time.sleep(0.05)
    return reg, host


class LoopFs:
    """A freshly made ext4 filesystem on a loop device: the VM's root filesystem slows down with
    every create/delete cycle, which would make figures drift."""

    def __init__(self, base, size="3G"):
        self.img = os.path.join(base, "fs.img")
        self.mnt = os.path.join(base, "mnt")
        os.makedirs(self.mnt, exist_ok=True)
        subprocess.run(["truncate", "-s", size, self.img], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", self.img], check=True)
        subprocess.run(["mount", "-o", "loop", self.img, self.mnt], check=True)

    def close(self):
        subprocess.run(["umount", "-l", self.mnt])
        os.unlink(self.img)
