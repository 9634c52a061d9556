// Package svid is identity-agent's link to the SPIFFE Workload API and its
// encoders of SPIFFE material into the formats services read.
//
// # Source
//
// A Source holds one connection to the Workload API (a SPIRE agent's socket
// or the embedded dev server) through go-spiffe's workloadapi.Client and
// keeps the latest X.509 context (SVIDs, own and federated bundles) and JWT
// bundles, all pushed by the API on streams. It never polls. Connection
// loss is retried forever with capped backoff and shows in Status; until
// the first update arrives (WaitReady) the getters return ErrNotReady.
//
// Source implements go-spiffe's x509svid.Source, x509bundle.Source and
// jwtbundle.Source, so it can be handed to tlsconfig directly. A
// Selector chooses one SVID by SPIFFE ID or SPIRE hint when the workload
// has several; X509SVIDSource(sel) applies it on every call so TLS
// handshakes always see the current SVID.
//
// # Encoding and validation
//
// EncodeCertsPEM, EncodeKeyPEM (PKCS#8), EncodeJWKS and BundleCerts turn
// the material into the bytes services read; all are deterministic, so an
// unchanged SVID or bundle encodes to unchanged bytes and causes no
// rewrite or reload. Validate rejects material that would break a service
// (key not matching the certificate, outside its validity, chain not
// verifying to the trust bundle) before it is written.
//
// Single-file and consumer-specific formats: EncodeCombinedPEM (key and
// chain in one file, either order: the only layout a reader on its own
// schedule can never tear), EncodeCredentialBundle and the
// FSDelivery* names (the SPIFFE Filesystem Delivery draft, spiffe/spiffe
// PR #376; every name it uses is in fsdelivery.go), TrustDomainBundles
// (one bundle per trust domain instead of one merged trust store) and
// EncodePKCS12Keystore / EncodePKCS12Truststore for Java and .NET.
//
// Writing the encoded files to disk atomically is package atomicdir's job.
package svid
