package svidtest

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

func checkSecurityHeader(ctx context.Context) error {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok || len(md["workload.spiffe.io"]) != 1 || md["workload.spiffe.io"][0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// handler implements the Workload API service.
type handler struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	s *Server
}

// stream sends the current state, then again after every change, until the
// client goes away or the server stops.
func (h *handler) stream(ctx context.Context, send func(*published) error) error {
	h.s.mu.Lock()
	stopped := h.s.stopped
	h.s.mu.Unlock()
	for {
		p := h.s.snapshot()
		if err := send(p); err != nil {
			return err
		}
		select {
		case <-p.changed:
		case <-ctx.Done():
			return nil
		case <-stopped:
			return status.Error(codes.Unavailable, "dev Workload API stopping")
		}
	}
}

func (h *handler) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	own := h.s.cfg.TrustDomain.IDString()
	return h.stream(stream.Context(), func(p *published) error {
		if len(p.svids) == 0 {
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		resp := &workload.X509SVIDResponse{FederatedBundles: map[string][]byte{}}
		for td, b := range p.x509 {
			if td != own {
				resp.FederatedBundles[td] = b
			}
		}
		for _, sv := range p.svids {
			key, err := x509.MarshalPKCS8PrivateKey(sv.PrivateKey)
			if err != nil {
				return status.Errorf(codes.Unavailable, "could not serialize response: %v", err)
			}
			resp.Svids = append(resp.Svids, &workload.X509SVID{
				SpiffeId:    sv.ID.String(),
				X509Svid:    concatDER(sv.Certificates),
				X509SvidKey: key,
				Bundle:      p.x509[own],
				Hint:        sv.Hint,
			})
		}
		return stream.Send(resp)
	})
}

// FetchX509Bundles and FetchJWTBundles send only when the bundles differ
// from the last response on the stream, as SPIRE's agent does: an SVID
// rotation alone does not produce a bundle message. With no identity left
// they answer PermissionDenied too, as SPIRE's agent does unless
// allow_unauthenticated_verifiers is set.
func (h *handler) FetchX509Bundles(_ *workload.X509BundlesRequest, stream workload.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	var prev *workload.X509BundlesResponse
	return h.stream(stream.Context(), func(p *published) error {
		if len(p.svids) == 0 {
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		resp := &workload.X509BundlesResponse{Bundles: p.x509}
		if prev != nil && proto.Equal(prev, resp) {
			return nil
		}
		prev = resp
		return stream.Send(resp)
	})
}

func (h *handler) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream workload.SpiffeWorkloadAPI_FetchJWTBundlesServer) error {
	var prev *workload.JWTBundlesResponse
	return h.stream(stream.Context(), func(p *published) error {
		if len(p.svids) == 0 {
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		resp := &workload.JWTBundlesResponse{Bundles: p.jwt}
		if prev != nil && proto.Equal(prev, resp) {
			return nil
		}
		prev = resp
		return stream.Send(resp)
	})
}

func (h *handler) FetchJWTSVID(_ context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.SpiffeId != "" {
		if _, err := spiffeid.FromString(req.SpiffeId); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid requested SPIFFE ID: %v", err)
		}
	}
	h.s.jwtRequests.Add(1)
	resp := &workload.JWTSVIDResponse{}
	for _, ident := range h.s.identities() {
		if req.SpiffeId != "" && ident.ID.String() != req.SpiffeId {
			continue
		}
		token, err := h.s.jwtSVID(ident.ID, req.Audience)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "could not fetch %q JWTSVID: %v", ident.ID, err)
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: ident.ID.String(), Svid: token, Hint: ident.Hint})
	}
	if len(resp.Svids) == 0 {
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	return resp, nil
}

func (h *handler) ValidateJWTSVID(_ context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if req.Audience == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	sv, err := jwtsvid.ParseAndValidate(req.Svid, h.s.snapshot().jwtSet, []string{req.Audience})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(spireClaims(normalizeClaims(sv.Claims), sv.ID.MemberOf(h.s.cfg.TrustDomain)))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "claims: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: sv.ID.String(), Claims: claims}, nil
}

// spireClaims shapes validated claims as SPIRE's agent returns them: "aud"
// is always a list, and a token from another trust domain keeps only
// "sub", "aud" and "exp" (SPIRE's allowed_foreign_jwt_claims, empty here).
func spireClaims(claims map[string]any, ownTrustDomain bool) map[string]any {
	if aud, ok := claims["aud"].(string); ok {
		claims["aud"] = []any{aud}
	}
	if !ownTrustDomain {
		for k := range claims {
			switch k {
			case "sub", "aud", "exp":
			default:
				delete(claims, k)
			}
		}
	}
	return claims
}

// normalizeClaims turns go-jose's typed claim values into the plain JSON
// types structpb accepts.
func normalizeClaims(in map[string]any) map[string]any {
	out := make(map[string]any, len(in))
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := in[k].(type) {
		case []string:
			l := make([]any, len(v))
			for i := range v {
				l[i] = v[i]
			}
			out[k] = l
		case float64, string, bool, nil, []any, map[string]any:
			out[k] = v
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// jwtKey names a cached JWT-SVID: one per identity and audience set, as
// SPIRE's agent caches them (the audiences in any order).
type jwtKey struct {
	id       spiffeid.ID
	audience string
}

type cachedJWT struct {
	token             string
	issued, expiresAt time.Time
}

// jwtSVID returns the cached JWT-SVID for id and audience while more than
// half of its lifetime is left, else mints and caches a new one: SPIRE's
// agent (manager.FetchJWTSVID, rotationutil.JWTSVIDExpiresSoon) answers
// the same token until then, so a client that asks again early gets the
// token it already has. "Half" is jittered by ±10% on every call, as
// SPIRE 1.13's is (rotationutil.calculateJitteredHalfLife): a client that
// asks at exactly half of the lifetime gets the old token about half of
// the time.
func (s *Server) jwtSVID(id spiffeid.ID, audience []string) (string, error) {
	aud := append([]string(nil), audience...)
	sort.Strings(aud)
	key := jwtKey{id: id, audience: strings.Join(aud, "\x00")}
	now := time.Now()
	s.mu.Lock()
	c, ok := s.jwtCache[key]
	s.mu.Unlock()
	if ok && now.Before(c.expiresAt) && c.expiresAt.Sub(now) > jitteredHalfLife(c.expiresAt.Sub(c.issued)) {
		return c.token, nil
	}
	token, err := s.ca.IssueJWTSVID(id, audience, s.cfg.JWTTTL)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	// Whole seconds, as the token's iat and exp are.
	s.jwtCache[key] = cachedJWT{token: token, issued: now.Truncate(time.Second), expiresAt: now.Add(s.cfg.JWTTTL).Truncate(time.Second)}
	s.mu.Unlock()
	return token, nil
}

// jitteredHalfLife is half of lifetime ±10%, drawn anew on every call.
func jitteredHalfLife(lifetime time.Duration) time.Duration {
	half := lifetime / 2
	delta := half / 10
	if delta <= 0 {
		return half
	}
	return half - delta + rand.N(2*delta) //nolint:gosec // jitter, not a secret
}
