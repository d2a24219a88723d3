#!/usr/bin/env bash
# Builds grafana's dashboard-linter from the Go module proxy into .cache/tools/bin/dashboard-linter.
#
# `go install github.com/grafana/dashboard-linter@vX` refuses: upstream's go.mod carries a `replace`
# (hashicorp/memberlist => grafana/memberlist), and its CLI is `package main` at the module root, so it
# cannot be imported from another module either. So this script makes a small wrapper build directory
# outside the work tree (.cache/dashboard-linter/, gitignored): it downloads the pinned module version
# from the proxy (`go mod download`, checksummed against sum.golang.org), copies it there, and builds it
# as the main module, so upstream's own go.mod, go.sum and `replace` apply exactly as upstream tests them.
# The result is cached: nothing is rebuilt while the binary's recorded version matches.
#
# Env: DASHBOARD_LINTER_VERSION (default below), POOLSCOPE_TOOLS_BIN (default <repo>/.cache/tools/bin),
#      GO (default /usr/local/go/bin/go if present, else `go` on PATH).
set -euo pipefail

VERSION=${DASHBOARD_LINTER_VERSION:-v0.2.0}
MODULE=github.com/grafana/dashboard-linter
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=${POOLSCOPE_TOOLS_BIN:-$ROOT/.cache/tools/bin}
WORK=$ROOT/.cache/dashboard-linter
BIN=$BIN_DIR/dashboard-linter
STAMP=$BIN_DIR/.dashboard-linter.version

if [[ -z ${GO:-} ]]; then
  if [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go; else GO=go; fi
fi
export GOTOOLCHAIN=local
export GOFLAGS=${GOFLAGS:--buildvcs=false}

# Writes the stand-in for github.com/grafana/grafana/apps/dashboard (see below for why).
write_v2_stub() {
  local dir=$1 pkg=$1/pkg/apis/dashboard/v2
  rm -rf "$dir"
  mkdir -p "$pkg"
  cat >"$dir/go.mod" <<'EOF'
// Local stand-in for github.com/grafana/grafana/apps/dashboard: see scripts/build-dashboard-linter.sh.
module github.com/grafana/grafana/apps/dashboard

go 1.24
EOF
  cat >"$pkg/stub.go" <<'EOF'
// Package v2 declares only the Grafana v2 dashboard schema types that dashboard-linter's lint/v2.go
// compiles against. This build lints classic dashboard JSON only: parsing a v2 spec is an error.
package v2

import "errors"

type DashboardSpec struct {
	Title       string
	Editable    *bool
	Elements    map[string]DashboardElement
	Variables   []DashboardVariableKind
	Annotations []DashboardAnnotationQueryKind
}

func (s *DashboardSpec) UnmarshalJSON([]byte) error {
	return errors.New("Grafana v2 dashboard schema is not supported by this dashboard-linter build (stubbed module)")
}

type DashboardElement struct{ PanelKind *DashboardPanelKind }
type DashboardPanelKind struct{ Spec DashboardPanelSpec }

type DashboardPanelSpec struct {
	Id          float64
	Title       string
	Description string
	VizConfig   struct {
		Group string
		Spec  struct {
			FieldConfig any
			Options     any
		}
	}
	Data struct {
		Spec struct{ Queries []DashboardPanelQueryKind }
	}
}

type DashboardPanelQueryKind struct {
	Spec struct {
		RefId  string
		Hidden bool
		Query  DashboardDataQueryKind
	}
}

type DashboardDataQueryKind struct {
	Group      string
	Datasource *struct{ Name *string }
	Spec       map[string]interface{}
}

type DashboardVariableRefresh string

const (
	DashboardVariableRefreshNever              DashboardVariableRefresh = "never"
	DashboardVariableRefreshOnDashboardLoad    DashboardVariableRefresh = "onDashboardLoad"
	DashboardVariableRefreshOnTimeRangeChanged DashboardVariableRefresh = "onTimeRangeChanged"
)

type variableCommon struct {
	Name     string
	Label    *string
	Multi    bool
	AllValue *string
	Refresh  DashboardVariableRefresh
	Query    string
	PluginId string
}

type DashboardVariableKind struct {
	QueryVariableKind *struct {
		Spec struct {
			Name     string
			Label    *string
			Multi    bool
			AllValue *string
			Refresh  DashboardVariableRefresh
			Query    DashboardDataQueryKind
		}
	}
	DatasourceVariableKind *struct{ Spec variableCommon }
	CustomVariableKind     *struct{ Spec variableCommon }
	IntervalVariableKind   *struct{ Spec variableCommon }
	ConstantVariableKind   *struct{ Spec variableCommon }
	TextVariableKind       *struct{ Spec variableCommon }
	AdhocVariableKind      *struct{ Spec variableCommon }
	GroupByVariableKind    *struct{ Spec variableCommon }
	SwitchVariableKind     *struct{ Spec variableCommon }
}

type DashboardAnnotationQueryKind struct {
	Spec struct {
		Name  string
		Query DashboardDataQueryKind
	}
}
EOF
}

if [[ -x $BIN && -f $STAMP && $(cat "$STAMP") == "$VERSION" ]]; then
  echo "dashboard-linter $VERSION already built: $BIN"
  exit 0
fi

start=$(date +%s)
mkdir -p "$BIN_DIR" "$WORK"

# A throwaway module to run `go mod download` from (it needs a go.mod to resolve against).
cat >"$WORK/go.mod" <<EOF
// Wrapper used only to download $MODULE@$VERSION; see scripts/build-dashboard-linter.sh.
module poolscope.local/dashboard-linter-wrapper

go 1.24
EOF
dir=$(cd "$WORK" && "$GO" mod download -json "$MODULE@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
if [[ -z $dir || ! -f $dir/go.mod ]]; then
  echo "could not download $MODULE@$VERSION from the Go module proxy" >&2
  exit 1
fi
grep -q '^replace ' "$dir/go.mod" && echo "upstream go.mod replace: $(grep '^replace ' "$dir/go.mod")"

# Upstream's go directive must be satisfiable by the local toolchain (GOTOOLCHAIN=local never downloads one).
want=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$dir/go.mod")
have=$("$GO" env GOVERSION | sed 's/^go//')
if [[ $(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1) != "$want" ]]; then
  echo "$MODULE@$VERSION needs Go >= $want; local toolchain is $have" >&2
  exit 1
fi

src=$WORK/src
rm -rf "$src"
cp -r "$dir" "$src"
chmod -R u+w "$src"

# v0.2.0's lint package imports the Grafana v2 dashboard schema types from
# github.com/grafana/grafana/apps/dashboard, a module version the Go module proxy reachable from these
# machines does not serve (403 "This module version is not available"). Only lint/v2.go uses it, to read
# Kubernetes-shaped v2 dashboards; our dashboards are classic (schemaVersion 41) JSON and never take that
# path. When the module cannot be downloaded, replace it with a local stub that declares just the types
# v2.go compiles against and refuses to parse a v2 spec, so a v2 dashboard fails loudly instead of being
# linted as empty. Every rule that lints classic dashboards is upstream's code, unchanged.
V2_MODULE=github.com/grafana/grafana/apps/dashboard
v2_version=$(sed -n "s#^[[:space:]]*$V2_MODULE \(v[^[:space:]]*\).*#\1#p" "$src/go.mod" | head -n1)
if (cd "$src" && "$GO" mod download "$V2_MODULE@$v2_version") >/dev/null 2>&1; then
  echo "using upstream $V2_MODULE@$v2_version"
else
  echo "$V2_MODULE@$v2_version is not downloadable here: building with the local v2-schema stub"
  write_v2_stub "$WORK/stub-apps-dashboard"
  (cd "$src" && "$GO" mod edit -replace "$V2_MODULE=$WORK/stub-apps-dashboard")
fi
(cd "$src" && "$GO" build -trimpath -ldflags='-s -w' -o "$BIN.tmp" .)
mv "$BIN.tmp" "$BIN"
echo "$VERSION" >"$STAMP"
echo "built dashboard-linter $VERSION in $(( $(date +%s) - start ))s: $BIN"
