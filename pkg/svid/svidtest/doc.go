// Package svidtest starts an in-process SPIFFE Workload API for tests, in
// the spirit of net/http/httptest: an in-memory CA issues short-lived
// X.509- and JWT-SVIDs for the identities a test names, and serves them over
// the real gRPC Workload API protocol (go-spiffe's proto/spiffe/workload) on
// a unix socket, so the code under test talks to it exactly as it would to
// a SPIRE agent.
//
//	srv := svidtest.Start(t, svidtest.Config{TTL: time.Minute})
//	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(srv.Addr())))
//
// It behaves as a SPIRE agent does where a client can tell:
//
//   - every call must carry the "workload.spiffe.io: true" metadata header
//     (InvalidArgument otherwise);
//   - X.509-SVIDs and bundles are pushed on streams, a new SVID at half of
//     its lifetime; a caller with no identity gets PermissionDenied;
//   - federated bundles arrive in the same X.509 response, keyed by
//     "spiffe://<trust domain>";
//   - the bundle streams send only when the bundles change;
//   - JWT-SVIDs are minted on request and need an audience; JWT bundles are
//     streamed; SVIDs carry their hints.
//
// Server.RotateSVIDs and Server.RotateCA let a test force rotations; Stop
// and Start restart the server with its CAs kept, as a SPIRE agent keeps
// its trust bundle across a restart.
//
// It is also the engine of `identity-agent dev`. Nothing in an agent
// configuration file can start it: a Workload API that hands an identity to
// whoever connects must not be started by accident in production.
package svidtest
