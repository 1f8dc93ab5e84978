#!/usr/bin/env python3
"""Builds a busybox OCI image from this machine's busybox-static (no registry, no internet).

`python3 scripts/busybox_image.py OUT.tar [NAME]` writes an OCI image-layout archive that
`ctr images import` loads (NAME defaults to docker.io/library/busybox:latest). bench/ imports
`layer()` and `config()` from here to push the same image to a local registry.
"""
import hashlib
import io
import json
import subprocess
import sys
import tarfile

BUSYBOX = "/bin/busybox"


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def layer():
    """An uncompressed layer tar: bin/busybox, its applets as symlinks, /etc/passwd and group."""
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"]:
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o1777 if d == "tmp" else 0o755
            t.addfile(ti)
        data = open(BUSYBOX, "rb").read()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size = len(data)
        ti.mode = 0o755
        t.addfile(ti, io.BytesIO(data))
        for a in sorted(set(applets)):
            if a == "busybox":
                continue
            ti = tarfile.TarInfo(f"bin/{a}")
            ti.type = tarfile.SYMTYPE
            ti.linkname = "busybox"
            t.addfile(ti)
        for name, text in [("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n")]:
            ti = tarfile.TarInfo(name)
            ti.size = len(text)
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(text.encode()))
    return buf.getvalue()


def config(raw_layer):
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
                       "rootfs": {"type": "layers", "diff_ids": [sha(raw_layer)]}}).encode()


def manifest(cfg, raw_layer):
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg),
                                  "size": len(cfg)},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(raw_layer),
                                   "size": len(raw_layer)}]}).encode()


def oci_archive(path, name):
    raw = layer()
    cfg = config(raw)
    man = manifest(cfg, raw)
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(man), "size": len(man),
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}]}).encode()
    with tarfile.open(path, "w") as t:
        def add(n, data):
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for blob in [raw, cfg, man]:
            add("blobs/sha256/" + sha(blob)[7:], blob)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: busybox_image.py OUT.tar [NAME]")
    oci_archive(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "docker.io/library/busybox:latest")
