package xfcc

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Header is the header identity-agent's HTTP-mode proxy writes, in
// Envoy's X-Forwarded-Client-Cert format.
const Header = "X-Forwarded-Client-Cert"

// Element is the one XFCC element the proxy writes for a request: which
// proxy verified the client, which certificate it presented and which
// SPIFFE ID that certificate carries.
type Element struct {
	// By is the proxy's own SPIFFE ID; zero when the proxy could not read
	// its SVID while writing the header (the key is then left out).
	By spiffeid.ID
	// Hash is the lowercase hex SHA-256 of the client's leaf certificate
	// (DER), as Envoy writes it.
	Hash string
	// URI is the client's verified SPIFFE ID.
	URI spiffeid.ID
}

// New returns the element for a client whose verified leaf certificate is
// leaf and whose SPIFFE ID is peer, written by the proxy whose ID is by.
func New(by spiffeid.ID, leaf *x509.Certificate, peer spiffeid.ID) Element {
	sum := sha256.Sum256(leaf.Raw)
	return Element{By: by, Hash: hex.EncodeToString(sum[:]), URI: peer}
}

// String formats e as the header value:
//
//	By=spiffe://example.org/server;Hash=<64 hex digits>;URI=spiffe://example.org/client
//
// SPIFFE IDs and hex digits need no quoting in this format.
func (e Element) String() string {
	var b strings.Builder
	if !e.By.IsZero() {
		b.WriteString("By=")
		b.WriteString(e.By.String())
		b.WriteByte(';')
	}
	b.WriteString("Hash=")
	b.WriteString(e.Hash)
	b.WriteString(";URI=")
	b.WriteString(e.URI.String())
	return b.String()
}

// Set removes every copy of the header from h (Strip) and sets it to e:
// what the proxy does to each request it forwards.
func Set(h http.Header, e Element) {
	Strip(h)
	h.Set(Header, e.String())
}

// Strip removes every header a backend could read as
// X-Forwarded-Client-Cert: any case, with '-' or '_' (some frameworks,
// CGI and WSGI among them, fold "_" and "-" into one name).
func Strip(h http.Header) {
	for k := range h {
		if isXFCCName(k) {
			delete(h, k)
		}
	}
}

func isXFCCName(k string) bool {
	return strings.EqualFold(strings.ReplaceAll(k, "_", "-"), Header)
}

// Parse reads one header value as the proxy writes it: a single element
// of semicolon-separated Key=Value pairs, with URI (a SPIFFE ID) and Hash
// (64 hex digits) required and By (a SPIFFE ID) optional. Other keys of
// Envoy's format (Subject, Cert, Chain, DNS) are skipped; values may be
// double-quoted as Envoy quotes them. Several elements (a comma outside
// quotes: a chain of proxies), a repeated key or a malformed value are
// errors: the proxy writes exactly one element.
func Parse(header string) (Element, error) {
	fail := func(format string, args ...any) (Element, error) {
		return Element{}, fmt.Errorf("xfcc: parse %q: "+format, append([]any{header}, args...)...)
	}
	pairs, err := split(strings.TrimSpace(header))
	if err != nil {
		return fail("%v", err)
	}
	var (
		e    Element
		seen = map[string]bool{}
	)
	for _, p := range pairs {
		key, value, ok := strings.Cut(p, "=")
		if !ok || key == "" {
			return fail("%q: want Key=Value", p)
		}
		value, err := unquote(value)
		if err != nil {
			return fail("%s: %v", key, err)
		}
		canon := strings.ToLower(key)
		if seen[canon] {
			return fail("%s given twice", key)
		}
		seen[canon] = true
		switch canon {
		case "by":
			if e.By, err = spiffeid.FromString(value); err != nil {
				return fail("By: %v", err)
			}
		case "uri":
			if e.URI, err = spiffeid.FromString(value); err != nil {
				return fail("URI: %v", err)
			}
		case "hash":
			if len(value) != 2*sha256.Size {
				return fail("Hash: want %d hex digits, got %d characters", 2*sha256.Size, len(value))
			}
			if _, err := hex.DecodeString(value); err != nil {
				return fail("Hash: %v", err)
			}
			e.Hash = strings.ToLower(value)
		}
	}
	switch {
	case e.URI.IsZero():
		return fail("no URI (the client's SPIFFE ID)")
	case e.Hash == "":
		return fail("no Hash")
	}
	return e, nil
}

var errMultiple = errors.New("more than one element (a comma outside quotes); the proxy writes one")

// split cuts an element into its pairs at semicolons outside quotes.
func split(s string) ([]string, error) {
	var (
		out     []string
		start   int
		inQuote bool
	)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++ // the escaped character
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == ',':
			return nil, errMultiple
		case !inQuote && c == ';':
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if inQuote {
		return nil, errors.New("unterminated quote")
	}
	return append(out, s[start:]), nil
}

// unquote undoes Envoy's quoting of a value ("..." with \" and \\).
func unquote(v string) (string, error) {
	if !strings.HasPrefix(v, `"`) {
		if strings.ContainsAny(v, `"\`) {
			return "", errors.New("stray quote or backslash")
		}
		return v, nil
	}
	if len(v) < 2 || !strings.HasSuffix(v, `"`) {
		return "", errors.New("unterminated quote")
	}
	var b strings.Builder
	inner := v[1 : len(v)-1]
	for i := 0; i < len(inner); i++ {
		c := inner[i]
		switch c {
		case '\\':
			if i+1 == len(inner) {
				return "", errors.New("dangling backslash")
			}
			i++
			c = inner[i]
		case '"':
			return "", errors.New("unescaped quote inside a quoted value")
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}
