package xfcc

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/pkg/mtls"
)

type ctxKey struct{}

// Option configures Middleware (go-spiffe style functional options).
type Option func(*options)

type options struct {
	authz  mtls.Authorizer
	reject func(w http.ResponseWriter, r *http.Request, status int, err error)
}

// WithAuthorizer also asks a about the forwarded client ID; a refused
// client gets 403 Forbidden. Without it every well-formed identity passes
// (the proxy's allow list has already decided).
func WithAuthorizer(a mtls.Authorizer) Option {
	return func(o *options) { o.authz = a }
}

// WithRejectHandler replaces how a refused request is answered (default:
// http.Error with the status and a one-line reason), for a service that
// logs refusals or answers in its own format. status is 401 or 403; err
// says why.
func WithRejectHandler(f func(w http.ResponseWriter, r *http.Request, status int, err error)) Option {
	return func(o *options) {
		if f != nil {
			o.reject = f
		}
	}
}

// Middleware serves a request with next only if it carries exactly one
// well-formed X-Forwarded-Client-Cert header (Parse), putting the element
// in the request's context (PeerID, FromContext). A request without one,
// with several, with a copy spelled with '_', or with a malformed one is
// answered 401 Unauthorized; with WithAuthorizer, a client it refuses gets
// 403 Forbidden. Only the header section is read, never trailers.
//
// The header proves nothing by itself: see the package documentation for
// when it can be trusted.
func Middleware(next http.Handler, opts ...Option) http.Handler {
	o := options{reject: func(w http.ResponseWriter, _ *http.Request, status int, err error) {
		http.Error(w, http.StatusText(status)+": "+err.Error(), status)
	}}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := FromRequest(r)
		if err != nil {
			o.reject(w, r, http.StatusUnauthorized, err)
			return
		}
		if o.authz != nil {
			if err := o.authz.Authorize(e.URI, nil); err != nil {
				o.reject(w, r, http.StatusForbidden, fmt.Errorf("xfcc: client %s: %w", e.URI, err))
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, e)))
	})
}

// FromRequest parses r's one X-Forwarded-Client-Cert header, as
// Middleware does: a missing header, several, or a copy under another
// spelling ('_' for '-') is an error, since the proxy strips all of those
// and writes exactly one.
func FromRequest(r *http.Request) (Element, error) {
	for k := range r.Header {
		if k != Header && isXFCCName(k) {
			return Element{}, fmt.Errorf("xfcc: header %q: a spelling the proxy never sends", k)
		}
	}
	switch v := r.Header.Values(Header); len(v) {
	case 0:
		return Element{}, errors.New("xfcc: no " + Header + " header: not forwarded by identity-agent's proxy")
	case 1:
		return Parse(v[0])
	default:
		return Element{}, fmt.Errorf("xfcc: %d %s headers; the proxy sends one", len(v), Header)
	}
}

// FromContext returns the element Middleware put in ctx.
func FromContext(ctx context.Context) (Element, bool) {
	e, ok := ctx.Value(ctxKey{}).(Element)
	return e, ok
}

// PeerID returns the client's SPIFFE ID that Middleware put in ctx; ok is
// false outside Middleware.
func PeerID(ctx context.Context) (spiffeid.ID, bool) {
	e, ok := FromContext(ctx)
	return e.URI, ok
}
