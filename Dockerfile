# syntax=docker/dockerfile:1
#
# One image with every binary of the fleet: one per topic family (cache-invalidation, timeline, …),
# the `scheduler` (periodic jobs) and the on-call `dlq` tool. The Helm chart (helm/bangumi-cdc)
# picks the binary per Deployment with `command: [<family>]`, so the image has no fixed entrypoint.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#       -t ghcr.io/bangumi/bangumi-cdc:0.1.0 .
#
# Not built in this repository's CI: these machines have no container engine. `make test` lints
# this file (hadolint) and checks BINARIES against the workspace (scripts/dockerfile-lint.sh);
# `make image` builds the same image without an engine (scripts/image-build.sh: mmdebstrap, each
# binary's --help inside it, an OCI layout).
# Families' topics/groups are compiled in (topics/ is read with include_str!), so the runtime image
# needs no files beside the binaries. Nothing is written to disk at runtime: the chart runs it
# with a read-only root filesystem as uid 10001.
#
# Base images are pinned by digest. These are the index digests a `docker buildx` log of
# 2026-09-27 shows `rust:1.95-bookworm` and `debian:bookworm-slim` resolving to; they could not be
# re-checked from here (no registry reachable). Before publishing, confirm or refresh them with
# `docker buildx imagetools inspect rust:1.95-bookworm` (and debian:bookworm-slim); a digest that
# no longer resolves fails the build, it never silently selects another image.
ARG RUST_IMAGE=rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
ARG RUNTIME_IMAGE=debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251

# ---- builder ----------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

# The binaries of the image: every `[[bin]]` of the workspace except the test harness's (demo,
# bench). scripts/dockerfile-lint.sh fails when this list and the workspace differ.
ARG BINARIES="cache-invalidation dlq notify scheduler search subject-date timeline user-events"

# rdkafka builds its own librdkafka (configure + make, C and C++) with OpenSSL (TLS, SASL
# PLAIN/SCRAM) and zlib; zstd is built in. Versions come with the digest-pinned base's Debian
# release: the security archive keeps only the newest, so pinned versions would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev make g++ pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
COPY . .

# Only the listed binaries are built and copied out: the cache mount keeps compiled dependencies
# between builds, and may hold binaries of other builds that must not reach the image. $bins is
# split on purpose (one `--bin` flag per word).
ENV CARGO_TARGET_DIR=/build/target
# hadolint ignore=SC2086
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    set -eu; \
    bins=""; for bin in ${BINARIES}; do bins="$bins --bin $bin"; done; \
    cargo build --release --locked $bins; \
    mkdir -p /out; \
    for bin in ${BINARIES}; do cp "target/release/$bin" /out/; done; \
    ls -l /out

# ---- runtime ----------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

# Set at publish time: the release (the chart's appVersion), the commit, the repository's URL.
ARG VERSION=0.1.0
ARG REVISION=""
ARG SOURCE=https://github.com/bangumi
LABEL org.opencontainers.image.title="bangumi-cdc" \
      org.opencontainers.image.description="Bangumi's change-data-capture workers: one binary per topic family, the scheduler and the dlq tool" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="AGPL-3.0-only" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

# Only what the binaries link beside glibc and libgcc (ldd): OpenSSL 3 (libssl3) and zlib; plus CA
# certificates for TLS to the brokers, Meilisearch and S3 (KAFKA_SSL_CA_LOCATION overrides them).
# Versions: see the builder's note.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 cdc \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cdc

COPY --from=builder /out/ /usr/local/bin/

USER 10001:10001
# /metrics, /healthz, /readyz (HTTP_ADDR).
EXPOSE 9464
ENV LOG_FORMAT=json
# The chart sets the command (the family's binary); running the image bare lists what is inside.
CMD ["sh", "-c", "ls /usr/local/bin"]
