// Package redisclient connects Redis clients and servers to SPIFFE
// identities and drives a Redis deployment from password auth to mTLS
// without an outage.
//
// Clients: New returns a go-redis v9 client whose TLS client certificate
// comes from a go-spiffe X.509 source on every handshake and whose server
// is authorized by SPIFFE ID, not hostname. Its Mode (disabled, dual_auth,
// tls_only; see ModeFromEnv) decides the path: dual_auth prefers mTLS on the
// TLS port and falls back to the password on the plaintext port only when
// the TLS path fails, logging and counting each fallback, and moves back to
// TLS by itself when the TLS port answers again. Health reports the path in
// use.
//
// Server: ConfigSetReloader is the "redis" reload action run after the
// agent rewrote the server's certificate files. Redis does not reload TLS
// files on a signal; it rereads them when a tls-*-file setting is set with
// CONFIG SET. ServerConfig generates the redis.conf TLS block of a phase.
//
// Transition: Transition reports the phase of a live server (A no TLS; B TLS
// added, password kept; C clients validated on TLS; D plaintext off, mTLS
// enforced) with the gates of the next step, and Advance / Rollback move
// one step with CONFIG SET (+ CONFIG REWRITE when the server has a config
// file), refusing with a GateError that names every failing gate. The
// Sampler, run by the agent, persists in a JSON state file since when no
// connection was seen on the plaintext port, so the window survives
// restarts.
//
// The package never opens a Workload API connection of its own: callers
// pass sources (pkg/svid's Source or go-spiffe's workloadapi.X509Source).
package redisclient
