package svid

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"software.sslmate.com/src/go-pkcs12"
)

// PKCS#12 files are written with go-pkcs12's Modern2023 encoder (PBES2,
// PBKDF2-HMAC-SHA-256, AES-256-CBC, HMAC-SHA-256 MAC): what OpenSSL 3 and
// Java 20 produce by default, readable by OpenSSL >= 1.1.1, Java >= 12 and
// Windows Server 2019. Pinned rather than pkcs12.Modern, which may move
// to algorithms older consumers cannot read.
var pkcs12Encoder = pkcs12.Modern2023

// EncodePKCS12Keystore encodes the SVID's key, leaf and intermediates as a
// password-protected PKCS#12 keystore (Java's and .NET's keystore format).
//
// The encoding is randomized (salts, IVs): encoding the same SVID twice
// gives different bytes. Callers that must not rewrite unchanged material
// keep the previous bytes while PKCS12Fingerprint is unchanged.
func EncodePKCS12Keystore(s *x509svid.SVID, password string) ([]byte, error) {
	if s == nil || len(s.Certificates) == 0 {
		return nil, fmt.Errorf("encode PKCS#12 keystore: no certificates")
	}
	if s.PrivateKey == nil {
		return nil, fmt.Errorf("encode PKCS#12 keystore for %s: no private key", s.ID)
	}
	data, err := pkcs12Encoder.Encode(s.PrivateKey, s.Certificates[0], s.Certificates[1:], password)
	if err != nil {
		return nil, fmt.Errorf("encode PKCS#12 keystore for %s: %w", s.ID, err)
	}
	return data, nil
}

// EncodePKCS12Truststore encodes the trust domains' authorities as a
// password-protected PKCS#12 truststore. Each certificate's alias (friendly
// name) is "<trust-domain>-<n>", unique even where CA subjects repeat
// across rotations, which Java would otherwise collapse into one entry.
func EncodePKCS12Truststore(bundles []TrustDomainBundle, password string) ([]byte, error) {
	var entries []pkcs12.TrustStoreEntry
	for _, b := range bundles {
		for i, c := range b.Certs {
			entries = append(entries, pkcs12.TrustStoreEntry{Cert: c, FriendlyName: fmt.Sprintf("%s-%d", b.TrustDomain.Name(), i+1)})
		}
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("encode PKCS#12 truststore: no certificates")
	}
	data, err := pkcs12Encoder.EncodeTrustStoreEntries(entries, password)
	if err != nil {
		return nil, fmt.Errorf("encode PKCS#12 truststore: %w", err)
	}
	return data, nil
}

// PKCS12Fingerprint digests what a PKCS#12 file is made of (the password,
// then each part's DER), so a caller can tell "same content, keep the old
// bytes" from "re-encode" without comparing randomized encodings. The
// digest is a SHA-256 over a secret-bearing input; it is kept in memory,
// never logged or written.
func PKCS12Fingerprint(password string, parts ...[]byte) string {
	h := sha256.New()
	writeLenPrefixed := func(b []byte) {
		var n [8]byte
		for i := range n {
			n[i] = byte(uint64(len(b)) >> (8 * (7 - i)))
		}
		h.Write(n[:])
		h.Write(b)
	}
	writeLenPrefixed([]byte(password))
	for _, p := range parts {
		writeLenPrefixed(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}
