# syntax=docker/dockerfile:1
#
# firstclick: one image with the four binaries (datagen, create-pubsub, create-bq-table,
# streaming). docker-compose.yml picks the binary with `command:`; with no command the image
# runs the service, `streaming run` (never the embedded demo: `streaming demo` runs that).
#
# Stages:
#   chef     the Rust toolchain plus cargo-chef
#   planner  reduces the workspace to a recipe: manifests and lock file, no sources
#   builder  compiles the dependencies from the recipe (a layer that only changes when a
#            Cargo.toml or Cargo.lock does), then the workspace's own crates
#   runtime  Debian slim with CA certificates, the four binaries, a non-root user
#
# The build needs BuildKit (the default builder of Docker 23+ and of `docker compose`).
# No key or .env ever enters the image: only Cargo.toml, Cargo.lock and crates/ are copied
# (and .dockerignore keeps keys/ and .env out of the build context as well).

# Same toolchain as CI; the runtime stage must use the same Debian release (glibc).
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME}/registry"
WORKDIR /src

FROM chef AS planner
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ENV CARGO_TERM_COLOR=never
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until the recipe (manifests, lock file) changes.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json \
        --bin datagen --bin create-pubsub --bin create-bq-table --bin streaming
# The workspace's own crates: a source change rebuilds these and nothing else.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked \
        --bin datagen --bin create-pubsub --bin create-bq-table --bin streaming \
    && mkdir -p /out \
    && cp target/release/datagen target/release/create-pubsub \
          target/release/create-bq-table target/release/streaming /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to Google's APIs (Pub/Sub, BigQuery, OAuth).
# Versions are not pinned: they come from the Debian release chosen above, security updates
# included, and a pinned version would stop building once Debian replaces it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 firstclick \
    && useradd --system --uid 10001 --gid firstclick --home-dir /home/firstclick \
        --create-home --shell /usr/sbin/nologin firstclick
COPY --from=builder /out/ /usr/local/bin/
USER 10001:10001
# `streaming demo` writes out/demo-rows.ndjson here; datagen --out writes its files relative
# to it.
WORKDIR /home/firstclick
# streaming's /metrics and /healthz (METRICS_ADDR).
EXPOSE 9100
CMD ["streaming", "run"]
