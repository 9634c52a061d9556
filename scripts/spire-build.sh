#!/usr/bin/env bash
# Builds SPIRE's server and agent at the version pinned in test/spire/tools
# (a tools module of its own, so that SPIRE's dependencies never enter the
# project's go.mod) into a cache directory keyed by that version, or reuses
# the binaries already there. Prints the directory on stdout; progress goes
# to stderr. The first build compiles ~300 MB of SPIRE (cgo: its sqlite3
# driver needs gcc): about 12 minutes on 2 cores; later builds hit Go's
# build cache, and a filled cache directory is reused as is.
#
#   IDENTITY_AGENT_SPIRE_CACHE  where the versioned directories go
#                               (default ${XDG_CACHE_HOME:-$HOME/.cache}/identity-agent)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/test/spire/tools"
version=$(awk '$1 == "github.com/spiffe/spire" { print $2 }' "$tools/go.mod")
[ -n "$version" ] || { echo "spire-build: no github.com/spiffe/spire version pinned in $tools/go.mod" >&2; exit 1; }
cache="${IDENTITY_AGENT_SPIRE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/identity-agent}"
out="$cache/spire-$version"

if [ -x "$out/spire-server" ] && [ -x "$out/spire-agent" ]; then
  echo "spire-build: reusing SPIRE $version in $out" >&2
  echo "$out"
  exit 0
fi

command -v gcc >/dev/null || { echo "spire-build: SPIRE $version needs gcc (cgo, for its sqlite3 driver): apt-get install gcc" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cd "$tools"
# One line naming the version when the module cannot be fetched (no
# network, proxy without it), instead of a page of go output.
if ! go mod download github.com/spiffe/spire >"$log" 2>&1; then
  echo "spire-build: cannot fetch github.com/spiffe/spire $version ($(go env GOPROXY)): $(tail -n 1 "$log")" >&2
  exit 1
fi
echo "spire-build: building SPIRE $version into $out (the first build takes about 12 minutes on 2 cores; later ones use Go's build cache)" >&2
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.spire-$version.XXXXXX")
start=$(date +%s)
# The same command as a plain `go build` of these tools, so that a build
# cache warmed by one serves the other.
if ! go build -o "$tmp/" github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent >"$log" 2>&1; then
  rm -rf "$tmp"
  echo "spire-build: cannot build SPIRE $version: $(grep -m 1 . "$log")" >&2
  exit 1
fi
# A half-built directory is never taken for a finished one.
rm -rf "$out"
mv "$tmp" "$out"
echo "spire-build: built SPIRE $version in $(( $(date +%s) - start ))s" >&2
echo "$out"
