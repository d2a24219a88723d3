#!/usr/bin/env bash
# Build the telemetry binaries the end-to-end tests need (OpenTelemetry Collector,
# Prometheus + promtool, Alertmanager + amtool) from the Go module proxy into
# .cache/tools/bin. Idempotent: a tool whose binary already reports the pinned
# version (and whose build stamp matches) is skipped, so a warm run takes seconds.
#
# Usage: scripts/build-tools.sh [--force] [otelcol|prometheus|alertmanager ...]
#   --force      rebuild even if the cached binary is current
#   tool names   build only these (default: all)
#
# Needs: bash, coreutils, Go >= 1.26 (GO=/path/to/go, else `go` on PATH, else
# /usr/local/go/bin/go), ca-certificates and the Go module proxy. No C compiler
# (CGO_ENABLED=0), no git, no prebuilt binaries. GOPATH/GOMODCACHE/GOCACHE/
# GOPROXY keep the Go defaults unless set in the environment, so the module and
# build caches persist between runs. Build logs: .cache/tools/logs/.
set -euo pipefail

# ---------------------------------------------------------------------------
# Pinned versions: the only place to change them (collector/builder-config.yaml
# must carry the same collector versions; the script checks and refuses if not).
# ---------------------------------------------------------------------------
# Collector builder (ocb) and every component in collector/builder-config.yaml.
# 0.157.0 is the newest line that has the contrib postgresqlreceiver on the Go
# proxy (v0.158-v0.165 are not served; core alone would build up to 0.162.0:
# memorylimiterprocessor v0.165.0 is missing, and otlphttpexporter v0.163.0+
# needs internal/statusutil, whose zips the proxy refuses). One receiver
# dependency is replaced in the manifest, see its `replaces` block.
OTELCOL_VERSION=0.157.0
# Stable (1.x) confmap providers released together with OTELCOL_VERSION.
OTELCOL_STABLE_VERSION=1.63.0
# Prometheus Go module version; v0.3MM.P is Prometheus 3.MM.P (v0.309.0 = 3.9.0).
PROMETHEUS_MODULE_VERSION=v0.309.0
ALERTMANAGER_VERSION=0.31.1
# ---------------------------------------------------------------------------

export GOTOOLCHAIN=local  # never download a Go toolchain

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_DIR=$REPO_ROOT/.cache/tools   # fixed: collector/builder-config.yaml's output_path points here
BIN_DIR=$TOOLS_DIR/bin
STAMP_DIR=$TOOLS_DIR/stamps
LOG_DIR=$TOOLS_DIR/logs
OCB_MANIFEST=$REPO_ROOT/collector/builder-config.yaml
OCB_OUTPUT=$TOOLS_DIR/build/poolscope-otelcol

# Prometheus 3.MM.P from module version v0.3MM.P.
prom_mm=${PROMETHEUS_MODULE_VERSION#v0.}; prom_mm=${prom_mm%%.*}
PROMETHEUS_VERSION=$((10#$prom_mm / 100)).$((10#$prom_mm % 100)).${PROMETHEUS_MODULE_VERSION##*.}

die() { echo "build-tools: ERROR: $*" >&2; exit 1; }

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

FORCE=0
SELECTED=()
for arg in "$@"; do
  case $arg in
    --force) FORCE=1 ;;
    -h|--help) usage; exit 0 ;;
    otelcol|prometheus|alertmanager) SELECTED+=("$arg") ;;
    *) usage >&2; die "unknown argument: $arg" ;;
  esac
done
[ ${#SELECTED[@]} -gt 0 ] || SELECTED=(otelcol prometheus alertmanager)

# --- Go --------------------------------------------------------------------
if [ -n "${GO:-}" ]; then :
elif command -v go >/dev/null 2>&1; then GO=$(command -v go)
elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go
else die "Go not found: install Go >= 1.26 (e.g. /usr/local/go) or set GO=/path/to/go"
fi
GO_VERSION=$("$GO" env GOVERSION 2>/dev/null) || die "'$GO env GOVERSION' failed; is $GO a working Go installation?"
case $GO_VERSION in
  go1.2[6-9]*|go1.[3-9][0-9]*|go[2-9]*) ;;
  *) die "$GO is $GO_VERSION; Go >= 1.26 is required (GOTOOLCHAIN=local: no toolchain download)" ;;
esac
# The collector builder runs `go` from PATH: make it the same Go.
PATH=$(dirname "$GO"):$PATH
export PATH
# No VCS stamping: the collector sources are generated inside this repo's
# checkout (whose git state says nothing about the binary) and module sources
# have no VCS at all; this also means git is not needed.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
export GOWORK=off

mkdir -p "$BIN_DIR" "$STAMP_DIR" "$LOG_DIR"

# One build at a time (parallel test runners may call this concurrently).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$TOOLS_DIR/.lock"
  flock 9
fi

# --- helpers ---------------------------------------------------------------
now() { echo "${EPOCHREALTIME:-$(date +%s)}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# version_ok BINARY REGEX: the binary runs and its --version output matches.
version_ok() {
  [ -x "$1" ] || return 1
  timeout 30 "$1" --version 2>&1 | grep -Eq "$2"
}

# is_cached TOOL KEY BINARY=REGEX...: stamp matches KEY and every binary reports its version.
is_cached() {
  local tool=$1 key=$2 pair
  shift 2
  [ "$FORCE" = 0 ] || return 1
  [ -f "$STAMP_DIR/$tool.stamp" ] && [ "$(cat "$STAMP_DIR/$tool.stamp")" = "$key" ] || return 1
  for pair in "$@"; do
    version_ok "$BIN_DIR/${pair%%=*}" "${pair#*=}" || return 1
  done
}

# fail TOOL LOG MESSAGE: print the tail of the build log and exit.
fail() {
  echo "build-tools: ERROR: $3" >&2
  echo "build-tools: last lines of $2:" >&2
  tail -n 40 "$2" | sed 's/^/    /' >&2
  exit 1
}

# module_dir MODULE@VERSION LOG: download a module's source, print its directory.
module_dir() {
  local json dir
  # On failure `go mod download -json` puts the reason in the JSON's "Error".
  json=$(cd "$TOOLS_DIR" && "$GO" mod download -json "$1" 2>>"$2") || { printf '%s\n' "$json" >>"$2"; return 1; }
  dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  { [ -n "$dir" ] && [ -d "$dir" ]; } || { printf '%s\n' "$json" >>"$2"; return 1; }
  printf '%s\n' "$dir"
}

# build_in_module MODULE VERSION SHOWN_VERSION LOG CMD...: build ./cmd/CMD of a Prometheus-style
# module from inside the module itself, so its own go.mod (with its replace and
# exclude directives) and go.sum decide the dependency graph, exactly as upstream's
# `make build` does. `go install MODULE/cmd/X@VERSION` is not used because it
# refuses modules whose go.mod has replace/exclude directives (every Prometheus
# v0.30x release has `exclude`).
build_in_module() {
  local module=$1 version=$2 shown=$3 log=$4 dir stage cmd pkgs=() ldflags
  shift 4
  dir=$(module_dir "$module@$version" "$log") || return 1
  for cmd in "$@"; do pkgs+=("./cmd/$cmd"); done
  # What upstream's promu sets (minus build date, to keep builds reproducible).
  ldflags="-s -w -X github.com/prometheus/common/version.Version=$shown"
  ldflags+=" -X github.com/prometheus/common/version.Revision=$version"
  ldflags+=" -X github.com/prometheus/common/version.Branch=go-module-proxy"
  ldflags+=" -X github.com/prometheus/common/version.BuildUser=poolscope-build-tools"
  stage=$(mktemp -d "$TOOLS_DIR/stage.XXXXXX")
  # The module cache is read-only: -mod=readonly (overrides any GOFLAGS -mod=mod).
  if ! (cd "$dir" && CGO_ENABLED=0 "$GO" build -mod=readonly -buildvcs=false -trimpath \
          -tags netgo -ldflags "$ldflags" -o "$stage/" "${pkgs[@]}") >>"$log" 2>&1; then
    rm -rf "$stage"; return 1
  fi
  for cmd in "$@"; do mv -f "$stage/$cmd" "$BIN_DIR/$cmd"; done
  rmdir "$stage"
}

# --- OpenTelemetry Collector -------------------------------------------------
check_manifest() {
  [ -f "$OCB_MANIFEST" ] || die "collector manifest not found: $OCB_MANIFEST"
  local bad
  # Every gomod/version line must carry the pinned version for its line.
  bad=$(grep -nE '^[[:space:]]*(-[[:space:]]*)?gomod:' "$OCB_MANIFEST" |
        grep -vE "go\.opentelemetry\.io/collector/confmap/provider/[a-z]+ v${OTELCOL_STABLE_VERSION//./\\.}[[:space:]]*$" |
        grep -vE " v${OTELCOL_VERSION//./\\.}[[:space:]]*$" || true)
  [ -z "$bad" ] || die "collector/builder-config.yaml does not match the pinned versions (components v$OTELCOL_VERSION, providers v$OTELCOL_STABLE_VERSION):
$bad"
  grep -qE "^[[:space:]]+version:[[:space:]]*\"?${OTELCOL_VERSION//./\\.}\"?[[:space:]]*$" "$OCB_MANIFEST" ||
    die "collector/builder-config.yaml: dist.version must be $OTELCOL_VERSION"
  grep -qE '^[[:space:]]+name:[[:space:]]*poolscope-otelcol[[:space:]]*$' "$OCB_MANIFEST" ||
    die "collector/builder-config.yaml: dist.name must be poolscope-otelcol"
  grep -qE '^[[:space:]]+output_path:[[:space:]]*\.cache/tools/build/poolscope-otelcol[[:space:]]*$' "$OCB_MANIFEST" ||
    die "collector/builder-config.yaml: dist.output_path must be .cache/tools/build/poolscope-otelcol"
}

build_otelcol() {
  local log=$LOG_DIR/otelcol.log start key ocb_dir=$TOOLS_DIR/ocb/v$OTELCOL_VERSION
  local vre="version ${OTELCOL_VERSION//./\\.}([^0-9.]|$)"
  start=$(now)
  check_manifest
  key="otelcol builder=v$OTELCOL_VERSION stable=v$OTELCOL_STABLE_VERSION go=$GO_VERSION manifest=$(sha256sum <"$OCB_MANIFEST" | cut -c1-16)"
  if is_cached otelcol "$key" "poolscope-otelcol=$vre"; then
    echo "otelcol      poolscope-otelcol $OTELCOL_VERSION: cached ($(elapsed "$start")s)"
    return
  fi
  : >"$log"
  rm -f "$STAMP_DIR/otelcol.stamp"
  if [ ! -x "$ocb_dir/builder" ]; then
    GOBIN=$ocb_dir "$GO" install "go.opentelemetry.io/collector/cmd/builder@v$OTELCOL_VERSION" >>"$log" 2>&1 ||
      fail otelcol "$log" "could not install the collector builder v$OTELCOL_VERSION"
  fi
  mkdir -p "$(dirname "$OCB_OUTPUT")"   # the builder creates only the last path element
  # The builder always makes an (unused) otelcol-distribution* dir in TMPDIR:
  # keep it, and go's work dirs, under .cache/tools/tmp and remove them after.
  rm -rf "$TOOLS_DIR/tmp"; mkdir -p "$TOOLS_DIR/tmp"
  (cd "$REPO_ROOT" && TMPDIR=$TOOLS_DIR/tmp "$ocb_dir/builder" --config "$OCB_MANIFEST") >>"$log" 2>&1 ||
    fail otelcol "$log" "collector build failed (builder v$OTELCOL_VERSION, manifest $OCB_MANIFEST)"
  rm -rf "$TOOLS_DIR/tmp"
  install -m 0755 "$OCB_OUTPUT/poolscope-otelcol" "$BIN_DIR/.poolscope-otelcol.tmp"
  mv -f "$BIN_DIR/.poolscope-otelcol.tmp" "$BIN_DIR/poolscope-otelcol"
  version_ok "$BIN_DIR/poolscope-otelcol" "$vre" ||
    fail otelcol "$log" "built poolscope-otelcol does not report version $OTELCOL_VERSION"
  echo "$key" >"$STAMP_DIR/otelcol.stamp"
  echo "otelcol      poolscope-otelcol $OTELCOL_VERSION: built ($(elapsed "$start")s)"
}

# --- Prometheus + promtool, Alertmanager + amtool ----------------------------
# Both are built inside their own module (upstream go.mod/go.sum, exclude and replace directives honoured).
# Usage: build_module_tools NAME MODULE MODULE_VERSION VERSION BINARY...
build_module_tools() {
  local name=$1 module=$2 modversion=$3 version=$4
  shift 4
  local log=$LOG_DIR/$name.log start key bin checks=() label
  local vre="version ${version//./\\.} "
  label=$(IFS=+; echo "$*")
  start=$(now)
  key="$name module=$modversion go=$GO_VERSION tags=netgo"
  for bin in "$@"; do checks+=("$bin=$vre"); done
  if is_cached "$name" "$key" "${checks[@]}"; then
    printf '%-12s %s %s: cached (%ss)\n' "$name" "$label" "$version" "$(elapsed "$start")"
    return
  fi
  : >"$log"
  rm -f "$STAMP_DIR/$name.stamp"
  build_in_module "$module" "$modversion" "$version" "$log" "$@" ||
    fail "$name" "$log" "$name build failed ($module@$modversion)"
  for bin in "$@"; do
    version_ok "$BIN_DIR/$bin" "$vre" || fail "$name" "$log" "built $bin does not report version $version"
  done
  echo "$key" >"$STAMP_DIR/$name.stamp"
  printf '%-12s %s %s: built (%ss)\n' "$name" "$label" "$version" "$(elapsed "$start")"
}

build_prometheus() {
  build_module_tools prometheus github.com/prometheus/prometheus "$PROMETHEUS_MODULE_VERSION" "$PROMETHEUS_VERSION" prometheus promtool
}

build_alertmanager() {
  build_module_tools alertmanager github.com/prometheus/alertmanager "v$ALERTMANAGER_VERSION" "$ALERTMANAGER_VERSION" alertmanager amtool
}

for tool in "${SELECTED[@]}"; do
  "build_$tool"
done
