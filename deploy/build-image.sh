#!/usr/bin/env bash
# Build the netdiag container image with Debian's podman and debootstrap — no image registry:
#   1. base image: `debootstrap --variant=minbase bookworm` (Debian's default mirror, or the
#      MIRROR given), imported with `podman import` (kept; built once per host);
#   2. the project's wheel and its dependencies' wheels, made on this host with its pip
#      (and so its index, proxy and certificates); the image build installs them offline;
#   3. `podman build --runtime runc` of deploy/Containerfile on that base (crun refuses hosts
#      with a hybrid cgroup v1/v2 layout; runc does not).
# Prints the image name on stdout. Env: TAG (localhost/netdiag:VERSION), BASE, MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (debootstrap and podman need it) — sudo deploy/build-image.sh"
for t in podman debootstrap runc; do
  command -v "$t" >/dev/null || die "$t not found — apt-get install podman debootstrap runc (or make setup)"
done
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || die "$PY not found — run make setup first"
version=$("$PY" -c 'import netdiag; print(netdiag.__version__)')
TAG=${TAG:-localhost/netdiag:$version}
BASE=${BASE:-localhost/netdiag-base:bookworm}

work=$(mktemp -d /var/tmp/netdiag-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

if ! podman image exists "$BASE"; then
  echo "build-image: debootstrap bookworm (minbase) -> $BASE" >&2
  if ! debootstrap --variant=minbase bookworm "$work/rootfs" ${MIRROR:+"$MIRROR"} \
      >"$work/debootstrap.log" 2>&1; then
    tail -20 "$work/debootstrap.log" >&2
    die "debootstrap failed (log above) — is the Debian mirror reachable?"
  fi
  tar -C "$work/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$work/rootfs"
fi

mkdir -p "$work/context"
mkdir -p "$work/context/wheels"
"$PY" -m pip wheel -q -w "$work/context/wheels" . >"$work/wheel.log" 2>&1 \
  || { cat "$work/wheel.log" >&2; die "pip wheel failed (log above)"; }
cp deploy/Containerfile "$work/context/Containerfile"
echo "build-image: podman build $TAG" >&2
podman build -q --runtime runc --network host --build-arg "BASE=$BASE" -t "$TAG" \
  -f "$work/context/Containerfile" "$work/context" >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log" >&2; die "podman build failed (log above)"; }
echo "$TAG"
