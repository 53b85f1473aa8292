# syntax=docker/dockerfile:1
#
# One image holding the four DeployGuard binaries; the command picks the role:
#
#   docker run IMAGE                          the REST API (deployguard-api serve)
#   docker run IMAGE deployguard-api migrate  apply migrations and exit
#   docker run IMAGE deployguard-worker       a worker
#   docker run IMAGE deployguard-beat         the periodic-task scheduler
#   docker run IMAGE deployguard scan …       the local CLI
#
# Build: docker build -t deployguard:0.1.0 .
# The dependency layer (cargo-chef) is rebuilt only when Cargo.toml/Cargo.lock change.
# --build-arg CARGO_PROFILE=dev builds unoptimised binaries in a fraction of the time.

# --- planner: reduce the workspace to a recipe of its dependencies -------------------
FROM rust:1.95-slim-trixie AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME}/registry"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- builder: dependencies first (cached layer), then the workspace -----------------
FROM chef AS builder
ARG CARGO_PROFILE=release
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --profile "${CARGO_PROFILE}" --locked --recipe-path recipe.json \
    --bin deployguard-api --bin deployguard-worker --bin deployguard-beat --bin deployguard
COPY . .
# Cargo puts the dev and test profiles' output in target/debug, bench's in
# target/release, any other's in target/<profile>.
RUN cargo build --profile "${CARGO_PROFILE}" --locked \
    --bin deployguard-api --bin deployguard-worker --bin deployguard-beat --bin deployguard \
    && case "${CARGO_PROFILE}" in \
         dev|test) out=target/debug ;; \
         bench) out=target/release ;; \
         *) out="target/${CARGO_PROFILE}" ;; \
       esac \
    && mkdir -p /out \
    && cp "${out}/deployguard-api" "${out}/deployguard-worker" \
          "${out}/deployguard-beat" "${out}/deployguard" /out/

# --- runtime: the binaries, git, CA certificates, nothing else ----------------------
# The same Debian release as the builder (glibc), with git 2.47.
FROM debian:trixie-slim AS runtime
# git runs every clone, scan, rewrite and push; curl serves the healthchecks; tini
# reaps the git processes a killed task leaves behind (the binary is not an init).
# Versions come from the pinned Debian release; see .hadolint.yaml.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 deployguard \
    && useradd --system --uid 10001 --gid deployguard --home-dir /home/deployguard \
       --create-home --shell /usr/sbin/nologin deployguard \
    && install -d -o deployguard -g deployguard -m 0700 /work
COPY --from=builder /out/ /usr/local/bin/

ENV WORK_DIR=/work
WORKDIR /home/deployguard
USER 10001:10001
# 8000: REST API; 9100: worker metrics and probes; 9101: beat metrics and probes.
EXPOSE 8000 9100 9101
# Each role answers on its own port (API_ADDR, WORKER_METRICS_ADDR, BEAT_METRICS_ADDR):
# whichever runs here must answer. Compose and Kubernetes set their own probe per role.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["sh", "-c", "a=${API_ADDR:-:8000} w=${WORKER_METRICS_ADDR:-:9100} b=${BEAT_METRICS_ADDR:-:9101}; curl -fsS -m 1 http://127.0.0.1:${a##*:}/api/v2/health || curl -fsS -m 1 http://127.0.0.1:${w##*:}/health || curl -fsS -m 1 http://127.0.0.1:${b##*:}/health"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["deployguard-api"]
