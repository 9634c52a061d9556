// Package svidtest starts an in-process SPIFFE Workload API for tests, in
// the spirit of net/http/httptest: an in-memory CA issues short-lived
// X.509- and JWT-SVIDs for the identities a test names, and serves them over
// the real gRPC Workload API protocol (go-spiffe's proto/spiffe/workload) on
// a unix socket, so the code under test talks to it exactly as it would to
// a SPIRE agent.
//
//	srv := svidtest.Start(t, svidtest.Config{TTL: time.Minute})
//	src := svid.NewSource(svid.WithAddr(srv.Addr())) // as a process would use a SPIRE agent's socket
//	_ = src.Start(ctx)
//	_ = src.WaitReady(ctx)
//
// It behaves as a SPIRE agent does where a client can tell:
//
//   - every call must carry the "workload.spiffe.io: true" metadata header
//     (InvalidArgument otherwise);
//   - X.509-SVIDs and bundles are pushed on streams, a new SVID at half of
//     its lifetime; a caller with no identity gets PermissionDenied, on
//     the bundle streams too;
//   - federated bundles arrive in the same X.509 response, keyed by
//     "spiffe://<trust domain>";
//   - the bundle streams send only when the bundles change;
//   - JWT-SVIDs need an audience; one per identity and audience set is
//     cached and answered again until half of its lifetime has passed, as
//     SPIRE's agent does; JWT bundles are streamed; SVIDs carry their hints;
//   - AddIdentity and RemoveIdentity register and delete an identity while
//     the server runs, as `spire-server entry create` and `entry delete`
//     do: the X.509 response gains or loses that SVID, the others unchanged.
//
// The scenarios of test/spire run against this server and against a real
// SPIRE server and agent, so that where they differ a test says so.
//
// Start and NewUnstarted use DefaultTrustDomain (example.org) when the
// Config names none; New, for a server outside a test, needs one.
//
// Server.RotateSVIDs and Server.RotateCA let a test force rotations;
// Server.RotateSVIDsAndWait rotates and returns once a given source (a
// go-spiffe X509Source, a svid.Source or its selected view) serves the new
// SVID, and WaitForCurrentSVID waits for that after any other change. Stop
// and Start restart the server with its CAs kept, as a SPIRE agent keeps
// its trust bundle across a restart.
//
// # CA rotation
//
// RotateCA rotates as a SPIRE server's CA manager does
// (spire pkg/server/ca/manager): it prepares the next root and JWT key and
// pushes them in the bundles at once, and activates them (they sign; the
// SVIDs are re-issued) Config.CAActivationDelay later, a third of the TTL
// by default. A peer therefore holds the new root before it meets an SVID
// that chains to it. SPIRE prepares when less than min(lifetime/2, 30 days)
// of the current CA remains and activates at min(lifetime/6, 7 days); it
// keeps the new SVIDs for the agent's next half-life rotation, where this
// server re-issues at activation so that a test sees the switch at once.
// A retired root stays in the bundle while an X.509-SVID it signed is
// still valid, and a retired JWT key while a JWT-SVID it signed is: SPIRE
// prunes a root 24 hours after the root itself expires, which for a
// session of short-lived SVIDs gives the same guarantee. ActivateCA
// activates without waiting, and Config.UnsafeImmediateCASwitch restores
// a switch with no warning, which no SPIRE server makes, for tests of how
// code copes with it.
//
// # Where it differs from SPIRE
//
// There is no attestation: every caller gets every identity, and every
// federated bundle (SPIRE sends those its entries federate with). Two
// identities with one hint are refused by New (SPIRE serves the oldest
// entry and logs a warning). Every SVID is re-issued at once, at half of
// the TTL (SPIRE's agent renews each on its own half-life, jittered by
// ±10% and checked every 5 seconds). The CA is
// self-signed, with no upstream authority and no tainted-key revocation.
// An X.509-SVID never outlives its root, as in SPIRE. ValidateJWTSVID
// returns "aud" as a list, and keeps only "sub", "aud" and "exp" of a
// foreign trust domain's token, as SPIRE does with no
// allowed_foreign_jwt_claims.
//
// It is also the engine of `identity-agent dev`. Nothing in an agent
// configuration file can start it: a Workload API that hands an identity to
// whoever connects must not be started by accident in production.
package svidtest
