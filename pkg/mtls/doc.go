// Package mtls is the home of SPIFFE mTLS for Go code that terminates or
// originates it in process, and of the authorization rule shared with
// identity-agent's proxy (pkg/tlsproxy).
//
// An Authorizer decides, after the peer's X.509-SVID verified against the
// trust bundles, whether its SPIFFE ID may connect; its String describes
// the policy for logs and status, and Fingerprint identifies it, so a
// reload notices an edited policy. ParseAllow builds one from allow-list
// entries (an exact ID, a path prefix "/*", or a whole trust domain), the
// grammar of the proxy's `allow:`; Describe wraps any go-spiffe
// tlsconfig.Authorizer; Adapt goes the other way.
//
// ServerConfig and ClientConfig return a *tls.Config that takes its SVID
// and bundles from go-spiffe sources at every handshake, so rotations
// apply without rebuilding anything: identity-agent's svid.Source (with
// X509SVIDSource to pick one SVID by hint or ID), a go-spiffe
// workloadapi.X509Source, or static values. Put the server config in an
// http.Server's TLSConfig and read the caller with PeerID(r.TLS); put the
// client config in an http.Transport's TLSClientConfig. Listen and Dial do
// the same for raw connections.
//
// Verification runs in tls.Config.VerifyConnection, which crypto/tls calls
// for resumed sessions too, unlike the VerifyPeerCertificate hook
// go-spiffe's tlsconfig installs: a session resumed after the bundles or
// the authorizer changed is judged by the current ones.
//
// Behind identity-agent's HTTP-mode proxy a service does not speak TLS at
// all: it reads the identity the proxy forwards with package xfcc.
package mtls
