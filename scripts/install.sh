#!/usr/bin/env bash
# First run on a fresh Debian 12 machine, as root: install what wharf needs, build it in release
# mode, install the binaries to /usr/local/bin, start wharfd on its defaults (as a systemd service
# when systemd runs, else in the background) and run a first container with the wharf CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --locked --bins
install -m 0755 target/release/wharfd /usr/local/bin/wharfd
for b in wharf containerd-shim-wharf-v2; do
  if [ -x "target/release/$b" ]; then install -m 0755 "target/release/$b" "/usr/local/bin/$b"; fi
done

sock=/run/wharf/wharfd.sock
if [ -d /run/systemd/system ]; then
  cat > /etc/systemd/system/wharfd.service <<'UNIT'
[Unit]
Description=wharf container runtime daemon
After=network.target local-fs.target

[Service]
ExecStart=/usr/local/bin/wharfd
Type=simple
Delegate=yes
KillMode=process
Restart=always
LimitNOFILE=infinity

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now wharfd.service
  systemctl restart wharfd.service
else
  pkill -x wharfd 2>/dev/null || true
  mkdir -p /var/log
  nohup /usr/local/bin/wharfd >/var/log/wharfd.log 2>&1 &
fi

for _ in $(seq 1 100); do
  [ -S "$sock" ] && ctr --address "$sock" version >/dev/null 2>&1 && break
  sleep 0.05
done
ctr --address "$sock" version

# A first container, with no registry needed: a busybox image built from busybox-static, loaded
# and run with wharf's own CLI (ctr works too: see the README's tour).
image=$(mktemp --suffix=.tar)
python3 scripts/busybox_image.py "$image" docker.io/library/busybox:latest
/usr/local/bin/wharf load -i "$image"
rm -f "$image"
/usr/local/bin/wharf run --rm busybox echo "hello from a wharf container"
echo
echo "wharfd is running on $sock. Try: wharf run --rm -it busybox sh   (or: wharf ps -a, wharf images)"
