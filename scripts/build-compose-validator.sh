#!/usr/bin/env bash
# Builds .cache/tools/bin/compose-config: `docker compose config` without Docker.
#
# There is no Docker engine or compose plugin on these machines, and Debian's docker-compose is the
# retired Python v1 that predates much of the Compose Specification. `docker compose config` is a thin
# CLI over github.com/compose-spec/compose-go: this wraps the same loader with the same options (schema
# validation against the Compose Specification JSON schema, .env and `${VAR:?err}` interpolation,
# normalisation, relative path resolution, and the consistency checks: undefined networks, volumes,
# secrets, configs, depends_on targets). It prints the resolved model as JSON, or the error and exits 1.
# Built from the Go module proxy in a wrapper module under .cache/compose-validator/ (gitignored), cached.
#
# Usage of the binary: compose-config [-f docker-compose.yml] [--env-file FILE ...] [--no-interpolate]
# Env: COMPOSE_GO_VERSION (default below), POOLSCOPE_TOOLS_BIN (default <repo>/.cache/tools/bin), GO.
set -euo pipefail

VERSION=${COMPOSE_GO_VERSION:-v2.16.2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=${POOLSCOPE_TOOLS_BIN:-$ROOT/.cache/tools/bin}
WORK=$ROOT/.cache/compose-validator
BIN=$BIN_DIR/compose-config
STAMP=$BIN_DIR/.compose-config.version

if [[ -z ${GO:-} ]]; then
  if [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go; else GO=go; fi
fi
export GOTOOLCHAIN=local GOWORK=off
export GOFLAGS=${GOFLAGS:--buildvcs=false}

if [[ -x $BIN && -f $STAMP && $(cat "$STAMP") == "$VERSION" ]]; then
  echo "compose-config (compose-go $VERSION) already built: $BIN"
  exit 0
fi

start=$(date +%s)
rm -rf "$WORK"
mkdir -p "$WORK" "$BIN_DIR"
cat >"$WORK/go.mod" <<EOF
module poolscope.local/compose-config

go 1.24

require github.com/compose-spec/compose-go/v2 $VERSION
EOF
cat >"$WORK/main.go" <<'EOF'
// compose-config loads a Compose file the way `docker compose config` does and prints the resolved
// model as JSON; any schema, interpolation or consistency error is printed and exits 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

type multi []string

func (m *multi) String() string     { return fmt.Sprint(*m) }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var files, envFiles multi
	noInterpolate := flag.Bool("no-interpolate", false, "do not interpolate environment variables")
	name := flag.String("project-name", "", "project name (default: the directory name, or `name:`)")
	flag.Var(&files, "f", "compose file (repeatable; default: compose.yaml/docker-compose.yml in the working directory)")
	flag.Var(&envFiles, "env-file", "env file (repeatable; default: .env next to the compose file, if present)")
	flag.Parse()

	opts := []cli.ProjectOptionsFn{
		cli.WithOsEnv,
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithInterpolation(!*noInterpolate),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
		cli.WithDefaultConfigPath,
	}
	if len(files) > 0 {
		opts = append([]cli.ProjectOptionsFn{cli.WithWorkingDirectory(filepath.Dir(files[0]))}, opts...)
	}
	if *name != "" {
		opts = append(opts, cli.WithName(*name))
	}
	po, err := cli.NewProjectOptions(files, opts...)
	if err != nil {
		fail(err)
	}
	project, err := po.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(append(out, '\n'))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
EOF
cd "$WORK"
# `go get` (not `go mod tidy`) so the module graph is exactly compose-go's own, with no "latest" look-ups.
"$GO" get "github.com/compose-spec/compose-go/v2@$VERSION"
"$GO" build -mod=mod -trimpath -ldflags='-s -w' -o "$BIN.tmp" .
mv "$BIN.tmp" "$BIN"
echo "$VERSION" >"$STAMP"
echo "built compose-config (compose-go $VERSION) in $(( $(date +%s) - start ))s: $BIN"
