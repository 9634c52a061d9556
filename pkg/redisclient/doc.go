// Package redisclient is a go-redis v9 client for Redis servers that
// authenticate with SPIFFE X.509 SVIDs.
//
// New returns a Client whose TLS client certificate comes from a go-spiffe
// X.509 source on every handshake (a rotated SVID is used by the next
// connection, with no reconnect logic in the caller) and whose server is
// authorized by SPIFFE ID, not hostname (ServerAuthorizer, WithTLS).
//
// Its Mode follows a server's password → mTLS migration, so a service
// changes path with a restart and no code change (ModeFromEnv):
//
//	disabled   password on the plaintext port
//	dual_auth  mTLS on the TLS port; the password on the plaintext port
//	           only while the TLS port is unreachable, logged and counted,
//	           and back to TLS by itself when it answers again; a TLS
//	           authentication failure is returned, never "fallen back" on
//	           (TLSError)
//	tls_only   mTLS on the TLS port, never plaintext
//
// Client.Health reports which path a connection took, from the server's
// view. NewTLSConfig and PingTLS are the TLS pieces on their own, for
// callers that dial Redis themselves.
//
// Options are functional (WithTLS, WithPlaintext, WithPasswordFile, ...).
// New starts no goroutine and dials nothing; in dual_auth the first
// fallback starts a prober that Close stops. The package never opens a
// Workload API connection of its own: callers pass sources (pkg/svid's
// Source or go-spiffe's workloadapi.X509Source).
package redisclient
