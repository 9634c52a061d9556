package svidtest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Defaults for Config fields left zero.
const (
	DefaultTTL    = time.Minute
	DefaultJWTTTL = 5 * time.Minute
)

// Identity is one SVID the dev server issues to every caller, like one
// SPIRE registration entry matching the workload.
type Identity struct {
	ID       spiffeid.ID
	Hint     string
	DNSNames []string
}

// Config configures a Server.
type Config struct {
	// TrustDomain of the main CA. Required.
	TrustDomain spiffeid.TrustDomain
	// Identities issued to callers; default spiffe://<td>/workload.
	Identities []Identity
	// TTL of X.509-SVIDs; a new set is pushed at half of it. Default 1m.
	TTL time.Duration
	// JWTTTL is the lifetime of minted JWT-SVIDs. Default 5m.
	JWTTTL time.Duration
	// Federated trust domains: each gets its own CA whose bundle is served
	// as a federated bundle.
	Federated []spiffeid.TrustDomain
	// Logger; default no-op.
	Logger *zap.Logger
}

// Server serves the Workload API. Start and Stop may be called repeatedly;
// the CAs survive a Stop, as a SPIRE agent's trust bundle survives its restart.
type Server struct {
	cfg       Config
	log       *zap.Logger
	ca        *CA
	federated map[spiffeid.TrustDomain]*CA

	mu       sync.Mutex
	svids    []*x509svid.SVID
	changed  chan struct{} // closed and replaced on every update, to wake streams
	grpcSrv  *grpc.Server
	socket   string
	timer    *time.Timer
	stopped  chan struct{}
	serveErr chan error
}

// New creates a Server and issues its first SVIDs; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("svidtest: trust domain is required")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.JWTTTL <= 0 {
		cfg.JWTTTL = DefaultJWTTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if len(cfg.Identities) == 0 {
		id, err := spiffeid.FromPath(cfg.TrustDomain, "/workload")
		if err != nil {
			return nil, fmt.Errorf("svidtest: default identity: %w", err)
		}
		cfg.Identities = []Identity{{ID: id}}
	}
	seenHints := map[string]bool{}
	for _, ident := range cfg.Identities {
		if ident.ID.TrustDomain() != cfg.TrustDomain {
			return nil, fmt.Errorf("svidtest: identity %s is not in trust domain %s", ident.ID, cfg.TrustDomain)
		}
		if ident.Hint != "" && seenHints[ident.Hint] {
			return nil, fmt.Errorf("svidtest: hint %q used twice", ident.Hint)
		}
		seenHints[ident.Hint] = true
	}
	ca, err := NewCA(cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, ca: ca, federated: map[spiffeid.TrustDomain]*CA{}, changed: make(chan struct{})}
	for _, td := range cfg.Federated {
		if td == cfg.TrustDomain {
			return nil, fmt.Errorf("svidtest: cannot federate with own trust domain %s", td)
		}
		fca, err := NewCA(td)
		if err != nil {
			return nil, err
		}
		s.federated[td] = fca
	}
	if err := s.issue(); err != nil {
		return nil, err
	}
	return s, nil
}

// CA returns the main trust domain's CA.
func (s *Server) CA() *CA { return s.ca }

// FederatedCA returns the CA of a federated trust domain, or nil.
func (s *Server) FederatedCA(td spiffeid.TrustDomain) *CA { return s.federated[td] }

// Addr is the socket address in the form go-spiffe and SPIFFE_ENDPOINT_SOCKET take.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "unix://" + s.socket
}

// SocketPath is the file system path of the socket: Addr without its
// unix:// scheme, empty before the first Start. It stays valid after Stop,
// so Start(SocketPath()) restarts the server where its clients expect it.
func (s *Server) SocketPath() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.socket
}

// CurrentSVIDs returns the SVIDs being served now.
func (s *Server) CurrentSVIDs() []*x509svid.SVID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*x509svid.SVID(nil), s.svids...)
}

// Start listens on socketPath (a stale socket file is replaced) and serves
// in its own goroutine until Stop.
func (s *Server) Start(socketPath string) error {
	abs, err := filepath.Abs(socketPath)
	if err != nil {
		return fmt.Errorf("svidtest: socket path %q: %w", socketPath, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grpcSrv != nil {
		return errors.New("svidtest: already started")
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return fmt.Errorf("svidtest: socket directory: %w", err)
	}
	// Only the owner may ask a dev CA for identities.
	lis, err := listenUnix(abs, 0o600)
	if err != nil {
		return fmt.Errorf("svidtest: %w", err)
	}
	g := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := checkSecurityHeader(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := checkSecurityHeader(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	workload.RegisterSpiffeWorkloadAPIServer(g, &handler{s: s})
	s.grpcSrv, s.socket = g, abs
	s.stopped = make(chan struct{})
	s.serveErr = make(chan error, 1)
	s.scheduleRotationLocked()
	go func() { s.serveErr <- g.Serve(lis) }()
	s.log.Info("dev Workload API listening", zap.String("socket", "unix://"+abs), zap.Stringer("trust_domain", s.cfg.TrustDomain))
	return nil
}

// Stop ends every stream and closes the socket. The Server can Start again.
func (s *Server) Stop() {
	s.mu.Lock()
	g := s.grpcSrv
	if g == nil {
		s.mu.Unlock()
		return
	}
	s.grpcSrv = nil
	close(s.stopped)
	if s.timer != nil {
		s.timer.Stop()
	}
	errc := s.serveErr
	s.mu.Unlock()
	g.Stop()
	if err := <-errc; err != nil {
		s.log.Warn("dev Workload API serve ended", zap.Error(err))
	}
	_ = os.Remove(s.socket)
}

// RotateSVIDs issues new SVIDs now and pushes them to every stream.
func (s *Server) RotateSVIDs() error {
	if err := s.issue(); err != nil {
		return err
	}
	s.mu.Lock()
	s.scheduleRotationLocked()
	s.mu.Unlock()
	return nil
}

// RotateCA rotates the main CA, then reissues and pushes SVIDs signed by the
// new root. The bundle carries old and new roots.
func (s *Server) RotateCA() error {
	if err := s.ca.Rotate(); err != nil {
		return err
	}
	return s.RotateSVIDs()
}

func (s *Server) issue() error {
	now := time.Now()
	svids := make([]*x509svid.SVID, 0, len(s.cfg.Identities))
	for _, ident := range s.cfg.Identities {
		sv, err := s.ca.IssueX509SVID(ident.ID, now.Add(-10*time.Second), now.Add(s.cfg.TTL), ident.DNSNames...)
		if err != nil {
			return err
		}
		sv.Hint = ident.Hint
		svids = append(svids, sv)
	}
	s.mu.Lock()
	s.svids = svids
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	s.log.Info("dev Workload API issued X.509-SVIDs", zap.Int("count", len(svids)), zap.Time("not_after", now.Add(s.cfg.TTL)))
	return nil
}

// scheduleRotationLocked arms the half-life timer, as SPIRE's agent rotates
// SVIDs once half of their lifetime has passed.
func (s *Server) scheduleRotationLocked() {
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.grpcSrv == nil {
		return
	}
	stopped := s.stopped
	s.timer = time.AfterFunc(s.cfg.TTL/2, func() {
		select {
		case <-stopped:
			return
		default:
		}
		if err := s.RotateSVIDs(); err != nil {
			s.log.Error("dev Workload API rotation failed", zap.Error(err))
		}
	})
}

// snapshot returns the current SVIDs and the channel that closes on the next change.
func (s *Server) snapshot() ([]*x509svid.SVID, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svids, s.changed
}

func (s *Server) x509Bundles() map[string][]byte {
	out := map[string][]byte{s.cfg.TrustDomain.IDString(): concatDER(s.ca.X509Bundle().X509Authorities())}
	for td, ca := range s.federated {
		out[td.IDString()] = concatDER(ca.X509Bundle().X509Authorities())
	}
	return out
}

func (s *Server) jwtBundles() (map[string][]byte, error) {
	out := map[string][]byte{}
	cas := []*CA{s.ca}
	for _, ca := range s.federated {
		cas = append(cas, ca)
	}
	for _, ca := range cas {
		b, err := ca.JWTBundle().Marshal()
		if err != nil {
			return nil, fmt.Errorf("svidtest: marshal JWT bundle for %s: %w", ca.TrustDomain(), err)
		}
		out[ca.TrustDomain().IDString()] = b
	}
	return out, nil
}

func (s *Server) jwtBundleSet() *jwtbundle.Set {
	set := jwtbundle.NewSet(s.ca.JWTBundle())
	for _, ca := range s.federated {
		set.Add(ca.JWTBundle())
	}
	return set
}

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
func (h *handler) stream(ctx context.Context, send func([]*x509svid.SVID) error) error {
	h.s.mu.Lock()
	stopped := h.s.stopped
	h.s.mu.Unlock()
	for {
		svids, changed := h.s.snapshot()
		if err := send(svids); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-stopped:
			return status.Error(codes.Unavailable, "dev Workload API stopping")
		}
	}
}

func (h *handler) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	return h.stream(stream.Context(), func(svids []*x509svid.SVID) error {
		if len(svids) == 0 {
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		bundles := h.s.x509Bundles()
		own := bundles[h.s.cfg.TrustDomain.IDString()]
		resp := &workload.X509SVIDResponse{FederatedBundles: map[string][]byte{}}
		for td, b := range bundles {
			if td != h.s.cfg.TrustDomain.IDString() {
				resp.FederatedBundles[td] = b
			}
		}
		for _, sv := range svids {
			key, err := x509.MarshalPKCS8PrivateKey(sv.PrivateKey)
			if err != nil {
				return status.Errorf(codes.Unavailable, "could not serialize response: %v", err)
			}
			resp.Svids = append(resp.Svids, &workload.X509SVID{
				SpiffeId:    sv.ID.String(),
				X509Svid:    concatDER(sv.Certificates),
				X509SvidKey: key,
				Bundle:      own,
				Hint:        sv.Hint,
			})
		}
		return stream.Send(resp)
	})
}

// FetchX509Bundles and FetchJWTBundles send only when the bundles differ
// from the last response on the stream, as SPIRE's agent does: an SVID
// rotation alone does not produce a bundle message.
func (h *handler) FetchX509Bundles(_ *workload.X509BundlesRequest, stream workload.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	var prev *workload.X509BundlesResponse
	return h.stream(stream.Context(), func([]*x509svid.SVID) error {
		resp := &workload.X509BundlesResponse{Bundles: h.s.x509Bundles()}
		if prev != nil && proto.Equal(prev, resp) {
			return nil
		}
		prev = resp
		return stream.Send(resp)
	})
}

func (h *handler) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream workload.SpiffeWorkloadAPI_FetchJWTBundlesServer) error {
	var prev *workload.JWTBundlesResponse
	return h.stream(stream.Context(), func([]*x509svid.SVID) error {
		bundles, err := h.s.jwtBundles()
		if err != nil {
			return status.Errorf(codes.Unavailable, "could not serialize response: %v", err)
		}
		resp := &workload.JWTBundlesResponse{Bundles: bundles}
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
	resp := &workload.JWTSVIDResponse{}
	for _, ident := range h.s.cfg.Identities {
		if req.SpiffeId != "" && ident.ID.String() != req.SpiffeId {
			continue
		}
		token, err := h.s.ca.IssueJWTSVID(ident.ID, req.Audience, h.s.cfg.JWTTTL)
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
	sv, err := jwtsvid.ParseAndValidate(req.Svid, h.s.jwtBundleSet(), []string{req.Audience})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(normalizeClaims(sv.Claims))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "claims: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: sv.ID.String(), Claims: claims}, nil
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
