// Package traefik writes a Traefik dynamic configuration file in step with
// the SVID identity-agent writes, so Traefik reaches its backends over
// SPIFFE mTLS with a certificate that rotates.
//
// Traefik's file provider watches its dynamic configuration files, not the
// certificate files they name, and it ignores a reload whose parsed
// configuration equals the previous one (a changed comment is not enough).
// Format therefore writes an http.serversTransports entry with the client
// certificate, its key and the root CAs inline as PEM: every rotation
// changes the parsed configuration. Format is a rotation.Format: the file
// is built from the same SVID as the output's other files and written with
// them as one set, so Traefik can never pair a new certificate with an old
// key. The price is that the file holds the private key: it is written
// 0600 (0640 at most, with the output's owner) like the key file itself.
//
// Traefik's provider reloads only on an event named like its file (with
// `filename:`) and loads every file below a `directory:`, versioned
// subdirectories included: it cannot watch the output's directory, whose
// set is swapped by renaming ..data. A Linker (a rotation.Reloader, kind
// "traefik") re-points a symlink in Traefik's watched directory at the
// format's file after every write; that rename is the event Traefik
// reloads on.
//
// Because SVIDs carry a SPIFFE ID as a URI SAN and usually no DNS name, the
// transport sets peerCertURI to the backend's SPIFFE ID together with
// insecureSkipVerify: true. In Traefik that combination skips only the
// hostname check: its VerifyPeerCertificate still verifies the chain
// against rootCAs and then requires the URI SAN to equal peerCertURI.
package traefik
