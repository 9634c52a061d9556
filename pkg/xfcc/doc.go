// Package xfcc reads and writes the X-Forwarded-Client-Cert header through
// which identity-agent's HTTP-mode proxy (pkg/tlsproxy, `http: true`)
// tells a plaintext backend who the verified client is:
//
//	X-Forwarded-Client-Cert: By=spiffe://example.org/server;Hash=<hex SHA-256 of the client leaf>;URI=spiffe://example.org/client
//
// The proxy writes it with Set (Strip, then one Element); a backend reads
// it with Parse, or wraps its handler in Middleware, which refuses a
// request without exactly one well-formed header (401) and puts the
// client's ID in the request context (PeerID).
//
// # When the header can be trusted
//
// The header is plain text: whoever can send a request to the backend
// can write any identity into it. The proxy removes every copy a client
// sends (in any case, '-' or '_') before adding its own, so the header is
// the verified identity exactly when every request reaching the backend
// went through the proxy. Make that so:
//
//   - Serve the backend on a unix socket that only the proxy can open
//     (mode 0600 owned by the agent's user, or 0660 with a group only the
//     agent and the service share), with the proxy's target
//     unix:///path/to/socket. A loopback TCP port is NOT enough: every
//     local user can connect to 127.0.0.1 and send a forged header.
//   - Or make the backend's port reachable only from the proxy (a network
//     namespace, a firewall rule matching the agent's user).
//
// Middleware cannot tell a forged header from a real one; it only makes
// sure that a request without an identity is refused rather than served
// as nobody. A service that cannot meet the rule above should terminate
// mTLS itself (package mtls) instead of trusting this header.
package xfcc
