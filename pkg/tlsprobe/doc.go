// Package tlsprobe asks a TLS endpoint which certificate it serves.
//
// After identity-agent writes a new SVID and runs a service's reload (a
// Redis CONFIG SET, a supervised uvicorn restart), "the reload command
// succeeded" says nothing about what the service now presents: Redis
// without a TLS port accepts CONFIG SET and keeps no TLS context at all,
// a restart may come up on the old files. A Prober connects the way a
// client would (tcp://host:port or unix:///path, optional SNI), completes
// the handshake, presenting a client certificate only when the server asks
// for one, and returns the leaf the server sent, which the caller compares
// with what it wrote.
//
// The probe does not verify the server's chain: it answers "what is
// served", and the caller checks that against the exact certificate it
// wrote, which is a stronger test than any chain verification.
package tlsprobe
