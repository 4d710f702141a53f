#!/usr/bin/env bash
# Idempotent set-up of a Debian 12 machine (as root) for the demo and the tests:
# the Debian packages the lab uses, and a virtualenv in the checkout (.venv) with the project installed.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

APT_PACKAGES=(
  zookeeper default-jre-headless         # coordination store (tests and demo start their own servers)
  openssh-server openssh-client          # the balanced service, one sshd per simulated host
  iptables nftables libnftables1 python3-nftables arptables   # kernel backends
  iproute2 conntrack kmod procps psmisc  # namespaces, conntrack counting, modprobe
  qemu-system-x86 busybox-static cpio    # legacy CLUSTERIP on Debian's 6.1 kernel under qemu
  stress-ng socat                        # load for the false-alarm benchmark, relays
  keepalived                             # the VRRP baseline of the failover benchmark (lab only)
  python3 python3-venv                   # a Python >= 3.11 for the virtualenv
  systemd                                # systemd-analyze verify/security for the unit tests
)

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (it installs Debian packages and the lab needs CAP_NET_ADMIN)" >&2
  exit 1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A Python >= 3.11 for the venv: the one on PATH if new enough, else Debian's.
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  PY=/usr/bin/python3
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' 2>/dev/null; then
  rm -rf .venv
  "$PY" -m venv .venv
fi

# Reinstall the project only when its dependency list changed.
stamp=.venv/.clusterip-failover-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi

# python3-nftables is a Debian package for Debian's interpreter; expose just that module to the venv.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p .venv/debian-nftables
ln -sfn /usr/lib/python3/dist-packages/nftables .venv/debian-nftables/nftables
echo "$PWD/.venv/debian-nftables" > "$site/debian_nftables.pth"
.venv/bin/python -c 'import nftables, iptc, kazoo, paramiko, tenacity' \
  || { echo "setup: the virtualenv cannot import its dependencies; remove .venv and run again" >&2; exit 1; }
