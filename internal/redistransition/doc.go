// Package redistransition drives a Redis server from password auth to
// mTLS without an outage, and reloads the server's TLS files. Only the
// agent (internal/agent) and the CLI (`identity-agent redis ...`) use it;
// clients use pkg/redisclient.
//
// Server reload: ConfigSetReloader is the "redis" reload action run after
// the agent rewrote the server's certificate files. Redis does not reload
// TLS files on a signal; it rereads them when a tls-*-file setting is set
// with CONFIG SET. ServerConfig generates the redis.conf TLS block of a
// phase.
//
// Transition: Transition reports the phase of a live server (A no TLS; B
// TLS added, password kept; C clients validated on TLS; D plaintext off,
// mTLS enforced) with the gates of the next step, and Advance / Rollback
// move one step with CONFIG SET (+ CONFIG REWRITE when the server has a
// config file), refusing with a GateError that names every failing gate.
// The Sampler, run by the agent, persists in a JSON State file since when
// no connection was seen on the plaintext port, so the window survives
// restarts. Admin is the administrative connection all of them use.
package redistransition
