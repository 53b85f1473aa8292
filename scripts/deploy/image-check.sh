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
#   DG_IMAGE_PROFILE=dev scripts/deploy/image-check.sh   unoptimised (scripts/test.sh,
#                                                        which so never builds release)
#
# Needs root; one run at a time (a lock). On a machine that can pull, `docker build .`
# is the same check.
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
exec 8>"$STATE/lock"
flock -w 1800 8 || fail "another run holds $STATE/lock"
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

# Rust 1.95 as the Dockerfile names it, whatever rustup's default is.
toolchain=$(rustup run 1.95.0 rustc --print sysroot 2>/dev/null || rustc --print sysroot)
[ "$toolchain" != /usr ] && [ -x "$toolchain/bin/cargo" ] && [ -x "$toolchain/bin/rustc" ] ||
  fail "no Rust toolchain directory with cargo and rustc 1.95 (found $toolchain)"
rustc_version=$("$toolchain/bin/rustc" --version)
case $rustc_version in "rustc 1.95."*) ;; *) fail "the Rust toolchain here is $rustc_version, not 1.95" ;; esac

root=$STATE/root
drop_root() { # unmounts what a killed debootstrap or chroot left mounted, then removes
  findmnt -rn -o TARGET | grep "^$root/" | sort -r | xargs -r -n1 umount -l || true
  rm -rf --one-file-system "$root"
}
# Both stand-ins are made together, and again whenever what they are made of changes;
# the stamp is written last, so a half-made pair is remade.
stamp="stand-ins 1; $rustc_version; extra CAs: $(ls /usr/local/share/ca-certificates 2>/dev/null | paste -sd' ')"
if [ "$(cat "$STATE/stand-ins" 2>/dev/null)" != "$stamp" ] ||
  ! podman image exists "$SLIM" || ! podman image exists "$RUST"; then
  step "stand-ins for $SLIM (debootstrap) and $RUST (+ gcc, libc6-dev, $rustc_version)"
  rm -f "$STATE/stand-ins"
  drop_root
  trap drop_root EXIT
  debootstrap --variant=minbase trixie "$root" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 ||
    { tail -n 20 "$STATE/debootstrap.log"; fail "debootstrap failed"; }
  tar -C "$root" -c . | podman import -q - "$SLIM" >/dev/null

  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  chroot "$root" sh -c 'apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ca-certificates gcc libc6-dev >/dev/null 2>&1 && rm -rf /var/lib/apt/lists/*'
  # A machine that reaches crates.io through a proxy with its own certificate
  # authority trusts it here too; the runtime image is left as the Dockerfile makes it.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
  fi
  umount "$root/proc"
  mkdir -p "$root/usr/local/rust" "$root/usr/local/cargo/bin"
  cp -a "$toolchain/bin" "$toolchain/lib" "$root/usr/local/rust/"
  for bin in cargo rustc rustdoc; do ln -s "/usr/local/rust/bin/$bin" "$root/usr/local/cargo/bin/$bin"; done
  tar -C "$root" -c . | podman import -q \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    - "$RUST" >/dev/null
  drop_root
  trap - EXIT
  printf '%s' "$stamp" >"$STATE/stand-ins"
fi

step "podman build (CARGO_PROFILE=$PROFILE)"
start=$(date +%s)
previous=$(podman image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
# Docker's image format keeps HEALTHCHECK (OCI has no field for it). No layer cache:
# each builder stage holds gigabytes of build output, and kept across runs it would
# fill the disk.
podman build --format docker --network host --layers=false --force-rm \
  --build-arg "CARGO_PROFILE=$PROFILE" -t "$TAG" . >"$STATE/build.log" 2>&1 ||
  { tail -n 40 "$STATE/build.log"; fail "the image does not build"; }
current=$(podman image inspect -f '{{.Id}}' "$TAG")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then podman rmi "$previous" >/dev/null 2>&1 || true; fi
echo "   built in $(($(date +%s) - start)) s; layers: $(podman history --format '{{.Size}}' "$TAG" | grep -v '^0 B' | paste -sd' ')"
for bin in deployguard-api deployguard-worker deployguard-beat deployguard; do
  podman run --rm --no-healthcheck --network none "$TAG" "$bin" --version >/dev/null || fail "$bin does not run in the image"
done
[ "$(podman run --rm --no-healthcheck --network none "$TAG" id -u)" = 10001 ] || fail "the image does not run as uid 10001"

DG_SMOKE_IMAGE=$TAG scripts/deploy/container-smoke.sh 8>&-
echo "image: ok"
