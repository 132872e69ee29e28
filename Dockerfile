# syntax=docker/dockerfile:1
# Two images: the signalbox worker and API (docker-compose.yml selects the binary with
# `command`), and an agent host (`--target agent`: signalbox-agent and python3 for the example
# bundle; the services it runs are its own children, never the worker's).

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
        --bin signalbox-worker --bin signalbox-api --bin signalbox-agent \
    && mkdir -p /out /out-agent \
    && cp target/release/signalbox-worker target/release/signalbox-api /out/ \
    && cp target/release/signalbox-agent /out-agent/

FROM debian:bookworm-slim AS signalbox
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

# An agent host: the agent, and what the example bundle needs to run.
FROM debian:bookworm-slim AS agent
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out-agent/ /usr/local/bin/
WORKDIR /var/lib/signalbox-agent
CMD ["signalbox-agent", "--help"]
