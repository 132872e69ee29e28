# syntax=docker/dockerfile:1
# One image for the signalbox worker and API (docker-compose.yml selects the binary with
# `command`). The demo service binary is included because the worker runs the demo fleet
# as local child processes.

FROM rust:1.92-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and incremental build across image builds; the binaries
# are copied out because the target cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin signalbox-worker --bin signalbox-api --bin signalbox-demo-service \
    && mkdir -p /out \
    && cp target/release/signalbox-worker target/release/signalbox-api \
        target/release/signalbox-demo-service /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home \
        --home-dir /var/lib/signalbox signalbox
COPY --from=builder /out/ /usr/local/bin/
# A fresh named volume mounted here takes this directory's ownership, so the
# unprivileged user can write its state.
ENV SIGNALBOX_HOME=/var/lib/signalbox
WORKDIR /var/lib/signalbox
USER signalbox
EXPOSE 50051
CMD ["signalbox-worker"]
