# Shared by scripts/demo and scripts/test: installs what is missing, idempotently, and sets up
# the environment. Source it; do not run it.

set -euo pipefail

SIGNALBOX_CACHE="${SIGNALBOX_CACHE:-$HOME/.cache/signalbox}"
# Build caches live outside the checkout, so a fresh clone on the same machine reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SIGNALBOX_CACHE/target}"
export SIGNALBOX_TEMPORAL_BIN="${SIGNALBOX_TEMPORAL_BIN:-$SIGNALBOX_CACHE/bin/temporal}"
export SIGNALBOX_ETCD_BIN="${SIGNALBOX_ETCD_BIN:-$SIGNALBOX_CACHE/bin/etcd-3.6.16}"
export SIGNALBOX_FAKES3_BIN="${SIGNALBOX_FAKES3_BIN:-$SIGNALBOX_CACHE/bin/fakes3-1.2.0}"
# The Kubernetes control plane of the Kubernetes substrate's tests, and kwok with its stages.
export SIGNALBOX_KUBE_BIN="${SIGNALBOX_KUBE_BIN:-$SIGNALBOX_CACHE/bin/kube-1.35.4}"
export SIGNALBOX_KWOK_DIR="${SIGNALBOX_KWOK_DIR:-$SIGNALBOX_CACHE/bin/kwok-0.8.0}"
# v1.5.1 is the newest tag `go install` accepts; later tags carry a replace directive.
TEMPORAL_CLI_VERSION="v1.5.1"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_debian_packages() {
    local missing=()
    command -v protoc >/dev/null || missing+=(protobuf-compiler)
    # The Temporal crates' protos import the well-known types (google/protobuf/*.proto), which
    # Debian ships in libprotobuf-dev, not with protoc.
    [ -f /usr/include/google/protobuf/field_mask.proto ] || missing+=(libprotobuf-dev)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v prometheus >/dev/null || missing+=(prometheus)
    command -v chromium >/dev/null || missing+=(chromium)
    # The example bundle the tests deploy is a Python program: nothing is special about Rust.
    command -v python3 >/dev/null || missing+=(python3)
    # Regional artifact caches are nginx proxy caches; agent hosts are network namespaces.
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=(iproute2)
    # Hosts join their namespace with nsenter.
    command -v nsenter >/dev/null || missing+=(util-linux)
    # The compose lint runs dclint, installed with npm on first use. A node from elsewhere
    # (NodeSource) brings its own npm; Debian's node needs Debian's npm.
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

ensure_temporal_cli() {
    if [ -x "$SIGNALBOX_TEMPORAL_BIN" ]; then
        return
    fi
    command -v go >/dev/null || { echo "Go is needed to install the Temporal CLI (go install)" >&2; exit 1; }
    say "installing the Temporal CLI $TEMPORAL_CLI_VERSION with go install (a few minutes, once)"
    go_without_sumdb_if_unreachable
    mkdir -p "$(dirname "$SIGNALBOX_TEMPORAL_BIN")"
    GOBIN="$(dirname "$SIGNALBOX_TEMPORAL_BIN")" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
        go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION"
}

# Go's checksum database may be unreachable from a build machine; the module proxy still serves
# the modules, and the install then trusts the proxy instead of failing unattended.
go_without_sumdb_if_unreachable() {
    if ! curl -fsS --max-time 5 -o /dev/null "https://sum.golang.org/lookup/github.com/google/uuid@v1.6.0" 2>/dev/null; then
        say "Go checksum database unreachable: building with GOSUMDB=off"
        export GOSUMDB=off GONOSUMCHECK=1 GONOSUMDB='*'
    fi
}

# Builds the Go program of tools/$1 into $2 from the Go module proxy, once; $3 says what it is.
ensure_go_tool() {
    local dir=$1 bin=$2 what=$3
    if [ -x "$bin" ]; then
        return
    fi
    command -v go >/dev/null || { echo "Go is needed to build $what (go build)" >&2; exit 1; }
    say "building $what from the Go module proxy (once)"
    go_without_sumdb_if_unreachable
    mkdir -p "$(dirname "$bin")"
    (cd "tools/$dir" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o "$bin" .)
}

# etcd 3.6 (the agents' key-value store), a main calling etcdmain.Main; Debian's etcd 3.4
# lacks what current clients expect.
ensure_etcd() {
    ensure_go_tool etcd "$SIGNALBOX_ETCD_BIN" "etcd 3.6.16"
}

# An S3-compatible server for the store's S3 backend tests: gofakes3 1.2.0 over memory.
ensure_fakes3() {
    ensure_go_tool s3 "$SIGNALBOX_FAKES3_BIN" "an S3-compatible test server (gofakes3)"
}

# A Kubernetes control plane for the Kubernetes substrate's tests, built from the Go module
# proxy (no Docker, no prebuilt binaries here): kube-apiserver, kube-controller-manager,
# kube-scheduler and kubectl 1.35.4 from tools/kube (k8s.io/kubernetes with each staging module
# replaced by its published v0.35.4), and kwok 0.8.0 for fake nodes and pod lifecycles, with the
# stage files that ship in its module. About 10 minutes once; each binary is moved into place
# only when whole, so an interrupted build is redone.
ensure_kube() {
    local c
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
        [ -x "$SIGNALBOX_KUBE_BIN/$c" ] && continue
        command -v go >/dev/null || { echo "Go is needed to build $c (go build)" >&2; exit 1; }
        say "building $c 1.35.4 from the Go module proxy (once; kube-apiserver takes about 5 minutes)"
        go_without_sumdb_if_unreachable
        mkdir -p "$SIGNALBOX_KUBE_BIN"
        (cd tools/kube && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o "$SIGNALBOX_KUBE_BIN/$c.part" "k8s.io/kubernetes/cmd/$c")
        mv "$SIGNALBOX_KUBE_BIN/$c.part" "$SIGNALBOX_KUBE_BIN/$c"
    done
    if [ ! -x "$SIGNALBOX_KWOK_DIR/kwok" ] || [ ! -f "$SIGNALBOX_KWOK_DIR/stages/pod-delete.yaml" ]; then
        command -v go >/dev/null || { echo "Go is needed to build kwok (go build)" >&2; exit 1; }
        say "building kwok 0.8.0 from the Go module proxy (once)"
        go_without_sumdb_if_unreachable
        mkdir -p "$SIGNALBOX_KWOK_DIR/stages"
        (cd tools/kwok && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o "$SIGNALBOX_KWOK_DIR/kwok.part" sigs.k8s.io/kwok/cmd/kwok)
        local module
        module="$(cd tools/kwok && GOTOOLCHAIN=local GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
        cp "$module/kustomize/stage/node/fast/node-initialize.yaml" "$module/kustomize/stage/node/heartbeat/node-heartbeat.yaml" \
            "$module/kustomize/stage/pod/fast/pod-complete.yaml" "$module/kustomize/stage/pod/fast/pod-delete.yaml" "$SIGNALBOX_KWOK_DIR/stages/"
        chmod u+w "$SIGNALBOX_KWOK_DIR/stages/"*
        mv "$SIGNALBOX_KWOK_DIR/kwok.part" "$SIGNALBOX_KWOK_DIR/kwok"
    fi
}

ensure_rust() {
    command -v cargo >/dev/null || { echo "Rust (cargo) is needed: https://rustup.rs" >&2; exit 1; }
}

ensure_all() {
    ensure_rust
    ensure_debian_packages
    ensure_temporal_cli
    ensure_etcd
    ensure_fakes3
}

build_all() {
    say "building the workspace (target dir: $CARGO_TARGET_DIR)"
    cargo build --locked --workspace --bins --tests
}
