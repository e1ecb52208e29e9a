# syntax=docker/dockerfile:1
#
# One image with every binary of the fleet: one per topic family (cache-invalidation, timeline, …),
# the `scheduler` (periodic jobs) and the on-call `dlq` tool. The Helm chart (helm/bangumi-cdc)
# picks the binary per Deployment with `command: [<family>]`, so the image has no fixed entrypoint.
#
#   docker build -t ghcr.io/bangumi/bangumi-cdc:0.1.0 .
#
# Not built in this repository's CI: these machines have no container engine. The steps are the
# ones `make build` runs natively, plus the Debian packages librdkafka's bundled build needs.
# Families' topics/groups are compiled in (topics/ is read with include_str!), so the runtime image
# needs no files beside the binaries. Nothing is written to disk at runtime: the chart runs it
# with a read-only root filesystem as uid 10001.
#
# Keep the build context small: the repository's .gitignore'd directories (.local/, target/) are
# not needed; a .dockerignore listing them speeds up `docker build`.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- builder ----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# rdkafka builds its own librdkafka (configure + make, C and C++) with TLS, SASL and zlib.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libssl-dev libsasl2-dev zlib1g-dev make g++ pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
COPY . .

# Every binary of the workspace except the test harness (fleet-harness: demo, tests). The cache
# mounts keep crates.io downloads and compiled dependencies between builds; the binaries are
# copied out of the cached target directory in the same step.
ENV CARGO_TARGET_DIR=/build/target
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --workspace --exclude fleet-harness --bins \
    && mkdir -p /out \
    && find target/release -maxdepth 1 -type f -executable -exec cp {} /out/ \; \
    && ls -l /out

# ---- runtime ----------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim

# Shared libraries the binaries link: OpenSSL 3, Cyrus SASL, zlib; CA certificates for TLS to the
# brokers (KAFKA_SSL_CA_LOCATION overrides them).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 libsasl2-2 zlib1g \
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
