#!/usr/bin/env bash
# Installs everything wharf's build and tests need on Debian 12, as root. Idempotent and quick
# when all is present. The tests start their own registry, daemons and containerd: the system
# services the packages start are stopped so they hold no sockets or ports.
set -euo pipefail

packages=(
  protobuf-compiler    # containerd-client's and k8s-cri's builds run protoc
  gcc libc6-dev        # wharf-cri's build script links the pause program statically (libc.a)
  libseccomp-dev pkg-config
  busybox-static       # test images are built from /bin/busybox
  docker-registry      # the real registry tests push to and pull from
  containerd runc      # Debian's ctr is the reference client; containerd/runc for side-by-side tests
  containernetworking-plugins iptables  # CNI plugins for crates/network; its tests read iptables-save
  skopeo
  apache2-utils        # htpasswd for registry auth tests
  openssl              # certificates for the HTTPS registry tests
  iproute2 e2fsprogs util-linux mount
  procps bsdutils      # pgrep and script(1) in the shim tests
  apparmor             # apparmor_parser: the CRI's default AppArmor profile must compile
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Private instances only: the packaged services must not run.
for svc in containerd docker-registry; do
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
pkill -x containerd 2>/dev/null || true
pkill -f "^/usr/bin/docker-registry serve /etc/docker/registry" 2>/dev/null || true

export PATH="$HOME/.cargo/bin:$PATH"
if command -v rustup >/dev/null 2>&1; then
  for c in clippy rustfmt; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest || true
echo "setup: ok"
