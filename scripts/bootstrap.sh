#!/usr/bin/env bash
# Bootstrap a fresh Debian 12 host (as root) for netdiag: system packages, .venv, tracefs.
# Idempotent and quiet when everything is already in place; loud only when it changes things.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (netdiag installs apt packages and mounts tracefs) — sudo make setup"
command -v apt-get >/dev/null || die "apt-get not found — netdiag's bootstrap targets Debian 12; install bcc, iproute2 and iperf3 by hand"

arch=$(dpkg --print-architecture)
pkgs=(python3 python3-venv python3-dev python3-bpfcc bpfcc-tools bpftool iproute2 iperf3
      iputils-ping procps kmod ca-certificates gcc make
      libsodium23  # the sigpool workers' Ed25519 verifier (node/sodium.py; falls back without)
      systemd podman debootstrap runc)  # the last line: deploy/ (units, image) and its tests

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# bcc needs a kernel header tree. Prefer the running kernel's own; else Debian's meta package
# (6.1 on Debian 12) — netdiag's programs use only stable ABI, so a different version compiles.
headers_ok() {
  [ -e "/lib/modules/$(uname -r)/build/include" ] && return 0
  compgen -G '/usr/src/linux-headers-*-common/include' >/dev/null
}

need=()
for p in "${pkgs[@]}"; do installed "$p" || need+=("$p"); done
headers_ok || need+=("HEADERS")

if [ ${#need[@]} -gt 0 ]; then
  log "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  if [[ " ${need[*]} " == *" HEADERS "* ]]; then
    unset 'need[-1]'
    if apt-cache show "linux-headers-$(uname -r)" >/dev/null 2>&1; then
      need+=("linux-headers-$(uname -r)")
    else
      need+=("linux-headers-$arch")
    fi
  fi
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

# .venv from Debian's python3 (the interpreter python3-bpfcc is built for), with Debian's bcc
# module linked into the venv's site-packages — not the whole of dist-packages.
PY=/usr/bin/python3
stamp=.venv/.netdiag-setup
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating .venv"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # pip's output goes to a log that is shown only when it fails
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e '.[dev]'; } >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    die "pip install failed (log above, kept in .venv/pip.log)"
  fi
  echo "$want" > "$stamp"
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
bcc_src=$("$PY" -c 'import bcc, os; print(os.path.dirname(bcc.__file__))' 2>/dev/null) \
  || die "Debian's bcc module does not import under $PY — apt-get install --reinstall python3-bpfcc"
# In site-packages, bcc is what it is to every tool: a third-party package. (Through a private
# .pth from .venv/system-bcc it looked like project source: hypothesis parsed it for constants
# and warned "<unknown>:749: DeprecationWarning: invalid escape sequence" from bcc's own code.)
rm -f "$site/netdiag-system-bcc.pth"
rm -rf .venv/system-bcc
ln -sfn "$bcc_src" "$site/bcc"

# tracefs: bcc reads tracepoint ids from it.
if ! grep -qs ' tracefs ' /proc/self/mounts; then
  log "mounting tracefs on /sys/kernel/tracing"
  mount -t tracefs tracefs /sys/kernel/tracing || die "cannot mount tracefs — is this a privileged container?"
fi
exit 0
