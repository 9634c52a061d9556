// Package spire is the conformance suite: scenarios written once against a
// small interface over a Workload API (workloadAPI in api_test.go) and run
// against two implementations of it, with the real identity-agent binary
// (`run`, `status`, `fetch`) in every scenario:
//
//   - the development Workload API (pkg/svid/svidtest), in TestDev, with
//     short-lived SVIDs;
//   - a real SPIRE server and agent (v1.13.3, built by
//     scripts/spire-build.sh from the tools module in tools/), on loopback
//     in a temporary directory, in TestSPIRE, which `make test-spire` runs.
//
// Both run in `make test-spire`; the test files carry the build tag
// `conformance`, so `make test` neither builds nor runs them (it stays as
// fast as before this suite existed).
//
// A scenario that passes on one and fails on the other is a difference
// between the dev API and SPIRE: the dev API is fixed to match.
//
// TestSPIRE skips with one line unless IDENTITY_AGENT_SPIRE_BIN names the
// directory holding spire-server and spire-agent; with CI=true or
// IDENTITY_AGENT_REQUIRE_SPIRE=1 a directory without them is a failure.
package spire
