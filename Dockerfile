# syntax=docker/dockerfile:1.7
#
# geoclock: one image, one binary; every process of the deployment
# (connectors, processor, sinks, report, simulators) is a subcommand.
#
#   docker build -t geoclock:latest .
#   docker run --rm geoclock:latest --help
#
# The compose file (docker-compose.yml, deploy/README.md) shows the
# multi-process layout.

############################ builder ############################
FROM rust:1-bookworm AS builder

# rdkafka-sys builds librdkafka from source (cmake, a C toolchain, zlib);
# librocksdb-sys builds RocksDB (C++) and runs bindgen, which loads libclang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libclang-dev clang cmake pkg-config libssl-dev libsasl2-dev zlib1g-dev build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Only what the build reads: the manifest, the sources, the Avro schemas
# (include_str!'d by src/kafka/codec) and the benches (declared as [[bench]]
# targets in Cargo.toml, so cargo wants the files to exist).
COPY Cargo.toml Cargo.lock ./
COPY schemas ./schemas
COPY benches ./benches
COPY src ./src

# The registry and target dirs are BuildKit cache mounts: a rebuild after a
# source change recompiles only geoclock, not RocksDB and librdkafka. The
# target dir is not part of the image, so the binary is copied out in the
# same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/app/target,sharing=locked \
    cargo build --release --locked --bin geoclock \
 && install -m 0755 target/release/geoclock /usr/local/bin/geoclock

############################ runtime ############################
FROM debian:bookworm-slim

# libstdc++6 (RocksDB) is in the base image already; listed so it stays.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libsasl2-2 zlib1g libstdc++6 \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 geoclock \
 && useradd --system --uid 10001 --gid geoclock --home-dir /var/lib/geoclock --no-create-home \
      --shell /usr/sbin/nologin geoclock \
 && mkdir -p /var/lib/geoclock /etc/geoclock \
 && chown geoclock:geoclock /var/lib/geoclock

COPY --from=builder /usr/local/bin/geoclock /usr/local/bin/geoclock

# State: RocksDB stores (processor), ledgers (connectors), dedup stores (sinks).
# A named volume mounted here starts owned by geoclock (Docker copies the
# directory's ownership into an empty volume).
VOLUME ["/var/lib/geoclock"]
WORKDIR /var/lib/geoclock

ENV GEOCLOCK_STATE_DIR=/var/lib/geoclock \
    GEOCLOCK_LOG=info

USER geoclock

# report 8080, simulators 8081/8082, connector inboxes 8090-8092, metrics 9464
EXPOSE 8080 8081 8082 8090 8091 8092 9464

ENTRYPOINT ["geoclock"]
CMD ["--help"]
