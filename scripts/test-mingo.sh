#!/usr/bin/env bash
# make test-mingo: the library on the lowest Go go.mod declares, fetched
# from the Go module proxy through GOTOOLCHAIN (a go that is too old for a
# dependency stops with "requires go >= ..."):
#   1. build, vet and test ./pkg/... (short tests, no race detector:
#      make test runs them all with it);
#   2. an outside module (test/importer, copied to a temporary directory)
#      on that Go, requiring this checkout through a replace: `go mod tidy`
#      must keep its go line, and its mTLS service, client and test build
#      and pass.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
minver=$(go mod edit -json | sed -n 's/^[[:space:]]*"Go": "\(.*\)",\{0,1\}$/\1/p')
[ -n "$minver" ] || { echo "test-mingo: no go line in go.mod" >&2; exit 1; }
export GOTOOLCHAIN="go$minver"
echo "test-mingo: GOTOOLCHAIN=$GOTOOLCHAIN ($(go version))"

go build ./pkg/...
go vet ./pkg/...
go test -short -count=1 -timeout 10m ./pkg/...

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp test/importer/*.go test/importer/go.mod "$tmp/"
cd "$tmp"
go mod edit -replace "github.com/identity-agent/identity-agent=$root"
go mod tidy
got=$(go mod edit -json | sed -n 's/^[[:space:]]*"Go": "\(.*\)",\{0,1\}$/\1/p')
if [ "$got" != "$minver" ]; then
	echo "test-mingo: go mod tidy in a module importing pkg/ raised its go line from $minver to $got" >&2
	exit 1
fi
go vet ./...
go build -o importer .
go test -count=1 ./...
echo "test-mingo: pkg/ and an outside module on go$minver: ok"
