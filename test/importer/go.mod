// An outside module that imports identity-agent's pkg/ as a user's would:
// `make test-mingo` (scripts/test-mingo.sh) copies this directory to a
// temporary one, points the replace at the checkout, runs `go mod tidy`
// there on the lowest Go the library declares and checks that tidy kept
// this go line, then builds and tests it. go.sum is written there, not here.
module example.com/importer

go 1.26.0

require github.com/identity-agent/identity-agent v0.0.0

replace github.com/identity-agent/identity-agent => ../..
