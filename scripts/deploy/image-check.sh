#!/usr/bin/env bash
# Builds the Dockerfile as written, with podman, and runs a real job through the image
# (container-smoke.sh in image mode: the API, a worker and beat as containers with a
# read-only root filesystem and no capabilities).
#
# No container registry is in reach of our machines, so the two base images the
# Dockerfile names are stood in for, under their own names, in podman's local storage:
#   debian:trixie-slim      Debian trixie from Debian's archive (debootstrap, minbase);
#   rust:1.95-slim-trixie   the same plus gcc and libc6-dev, and this machine's Rust
#                           1.95 toolchain in /usr/local/cargo, as in the official image.
# Every instruction after FROM runs for real: cargo-chef from crates.io, apt-get from
# Debian's archive. A stand-in is larger than the real slim image (minbase keeps docs
# and locales), so image sizes measured here overstate the real ones.
#
#   scripts/deploy/image-check.sh                     release build, as users build it
#   DG_IMAGE_PROFILE=dev scripts/deploy/image-check.sh   unoptimised (scripts/test.sh)
#
# Needs root. On a machine that can pull, `docker build .` is the same check.
set -euo pipefail
cd "$(dirname "$0")/../.."

PROFILE=${DG_IMAGE_PROFILE:-release}
TAG=localhost/deployguard:check
STATE=$HOME/.cache/deployguard/image-check
SLIM=docker.io/library/debian:trixie-slim
RUST=docker.io/library/rust:1.95-slim-trixie
MIRROR=${DG_DEBIAN_MIRROR:-http://deb.debian.org/debian}

fail() { printf 'image-check: %s\n' "$*" >&2; exit 1; }
step() { printf -- '-- %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || fail "needs root (podman, debootstrap, chroot)"

scripts/services.sh image-tools
mkdir -p "$STATE"
# runc and cgroupfs work where crun refuses this kernel's hybrid cgroups; containers
# get the limits this shell may grant (podman's defaults are above them).
cat >"$STATE/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
export CONTAINERS_CONF=$STATE/containers.conf

if ! podman image exists "$SLIM"; then
  step "stand-in for $SLIM (debootstrap)"
  rm -rf "$STATE/trixie"
  debootstrap --variant=minbase trixie "$STATE/trixie" "$MIRROR" >"$STATE/debootstrap.log" ||
    { tail -n 20 "$STATE/debootstrap.log"; fail "debootstrap failed"; }
  tar -C "$STATE/trixie" -c . | podman import -q - "$SLIM" >/dev/null
fi

if ! podman image exists "$RUST"; then
  step "stand-in for $RUST (gcc, libc6-dev and this machine's Rust 1.95)"
  toolchain=$(rustc --print sysroot)
  "$toolchain/bin/rustc" --version | grep -q '^rustc 1\.95\.' || fail "the Rust toolchain here is not 1.95"
  root=$STATE/rust-root
  rm -rf "$root"
  cp -a "$STATE/trixie" "$root"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  trap 'umount "$root/proc" 2>/dev/null || true' EXIT
  chroot "$root" sh -c 'apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ca-certificates gcc libc6-dev >/dev/null && rm -rf /var/lib/apt/lists/*'
  # A machine that reaches crates.io through a proxy with its own certificate
  # authority trusts it here too; the runtime image is left as the Dockerfile makes it.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  umount "$root/proc"
  trap - EXIT
  mkdir -p "$root/usr/local/rust" "$root/usr/local/cargo/bin"
  cp -a "$toolchain/bin" "$toolchain/lib" "$root/usr/local/rust/"
  for bin in cargo rustc rustdoc; do ln -s "/usr/local/rust/bin/$bin" "$root/usr/local/cargo/bin/$bin"; done
  tar -C "$root" -c . | podman import -q \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    - "$RUST" >/dev/null
  rm -rf "$root"
fi

step "podman build (CARGO_PROFILE=$PROFILE)"
start=$(date +%s)
# No layer cache: each builder stage holds gigabytes of build output, and a cache kept
# across runs would fill the disk. Leftovers of earlier builds go too.
podman build --network host --layers=false --force-rm --build-arg "CARGO_PROFILE=$PROFILE" \
  -t "$TAG" . >"$STATE/build.log" 2>&1 || { tail -n 40 "$STATE/build.log"; fail "the image does not build"; }
podman image prune -f >/dev/null
echo "   built in $(($(date +%s) - start)) s; layers: $(podman history --format '{{.Size}}' "$TAG" | head -n 12 | grep -v '^0 B' | paste -sd' ')"
for bin in deployguard-api deployguard-worker deployguard-beat deployguard; do
  podman run --rm "$TAG" "$bin" --version >/dev/null || fail "$bin does not run in the image"
done
[ "$(podman run --rm "$TAG" id -u)" = 10001 ] || fail "the image does not run as uid 10001"

DG_SMOKE_IMAGE=$TAG scripts/deploy/container-smoke.sh
echo "image: ok"
