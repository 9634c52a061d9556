// Package traefik keeps a Traefik dynamic configuration file in step with the
// SVID files identity-agent writes, so Traefik reaches its backends over
// SPIFFE mTLS with a certificate that rotates.
//
// Traefik's file provider watches its dynamic configuration files, not the
// certificate files they name, and it ignores a reload whose parsed
// configuration equals the previous one (a changed comment is not enough).
// The Reloader therefore writes an http.serversTransports entry with the
// client certificate, its key and the root CAs inline as PEM: every rotation
// changes the parsed configuration, and the three pieces arrive in one atomic
// rename, so Traefik can never pair a new certificate with an old key. The
// price is that the file holds the private key: it is written 0600 (owner
// configurable, e.g. the traefik user) like the key file itself.
//
// Because SVIDs carry a SPIFFE ID as a URI SAN and usually no DNS name, the
// transport sets peerCertURI to the backend's SPIFFE ID together with
// insecureSkipVerify: true. In Traefik that combination skips only the
// hostname check: its VerifyPeerCertificate still verifies the chain against
// rootCAs and then requires the URI SAN to equal peerCertURI.
//
// A Reloader is a rotation.Reloader (Kind "traefik"): put it last in an
// output's reloads, after the files it reads are written.
package traefik
