// Package devapi is the embedded development SPIFFE Workload API.
//
// It runs an in-process certificate authority and serves the real gRPC
// Workload API protocol (go-spiffe's proto/spiffe/workload) on a unix socket,
// behaving as a SPIRE agent does where a client can tell: the
// "workload.spiffe.io: true" metadata header is required, X.509-SVIDs and
// bundles are pushed on streams (a new SVID at half of its lifetime), JWT
// bundles are streamed, JWT-SVIDs are minted on request, and federated
// bundles arrive in the same X.509 response.
//
// It exists for `identity-agent dev`, the quick start and the tests. It is
// never reachable from an agent configuration file: only the `dev`
// subcommand and test code construct it, because a Workload API that hands
// an identity to whoever connects must not be started by accident in
// production.
package devapi
