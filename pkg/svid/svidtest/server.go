package svidtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/identity-agent/identity-agent/internal/unixsock"
)

// Defaults for Config fields left zero.
const (
	DefaultTTL    = time.Minute
	DefaultJWTTTL = 5 * time.Minute
)

// Identity is one SVID the server issues to every caller, like one SPIRE
// registration entry matching the workload.
type Identity struct {
	ID       spiffeid.ID
	Hint     string
	DNSNames []string
}

// Config configures a Server.
type Config struct {
	// TrustDomain of the main CA. New refuses a zero one; Start and
	// NewUnstarted, the helpers for tests, use DefaultTrustDomain instead.
	TrustDomain spiffeid.TrustDomain
	// Identities issued to callers; default spiffe://<td>/workload.
	Identities []Identity
	// TTL of X.509-SVIDs; a new set is pushed at half of it. Default 1m.
	TTL time.Duration
	// JWTTTL is the lifetime of minted JWT-SVIDs. Default 5m.
	JWTTTL time.Duration
	// CAActivationDelay is how long RotateCA publishes the next root (and
	// JWT key) before signing with it, so that every peer holds it before
	// it meets an SVID that chains to it. Default a third of TTL. SPIRE
	// leaves a third of the CA's lifetime between the two steps.
	CAActivationDelay time.Duration
	// UnsafeImmediateCASwitch makes RotateCA publish the new root and sign
	// with it in the same push, as no SPIRE server does: a peer that has not
	// received the new root yet rejects the new SVIDs. For tests of how
	// code copes with that.
	UnsafeImmediateCASwitch bool
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

	// rotMu orders the changes of what is served (issue, prepare,
	// activate), so that a slower one never publishes over a newer one.
	rotMu sync.Mutex

	mu       sync.Mutex
	idents   []Identity // what is registered; AddIdentity and RemoveIdentity change it
	jwtCache map[jwtKey]cachedJWT

	jwtRequests atomic.Uint64 // FetchJWTSVID calls
	cur         *published
	grpcSrv     *grpc.Server
	socket      string
	timer       *time.Timer // next SVID rotation
	caTimer     *time.Timer // next CA activation
	activate    []time.Time // when each prepared CA activates; oldest first
	stopped     chan struct{}
	serveErr    chan error
}

// published is what every stream serves; it is replaced as a whole, so a
// response never mixes SVIDs and bundles of different moments.
type published struct {
	svids   []*x509svid.SVID
	x509    map[string][]byte // trust domain ID → concatenated DER roots
	jwt     map[string][]byte // trust domain ID → JWKS
	jwtSet  *jwtbundle.Set
	changed chan struct{} // closed when a newer state replaces this one
}

// New creates a Server and issues its first SVIDs; it does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("svidtest: trust domain is required")
	}
	if cfg.TTL < 0 || cfg.JWTTTL < 0 || cfg.CAActivationDelay < 0 {
		return nil, errors.New("svidtest: TTL, JWTTTL and CAActivationDelay must not be negative")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.JWTTTL == 0 {
		cfg.JWTTTL = DefaultJWTTTL
	}
	if cfg.CAActivationDelay == 0 {
		cfg.CAActivationDelay = cfg.TTL / 3
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
		// SPIRE serves only the oldest of two entries with one hint and
		// logs a warning; a fixed identity list can refuse the mistake.
		if ident.Hint != "" && seenHints[ident.Hint] {
			return nil, fmt.Errorf("svidtest: hint %q used twice", ident.Hint)
		}
		seenHints[ident.Hint] = true
	}
	ca, err := NewCA(cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, ca: ca, federated: map[spiffeid.TrustDomain]*CA{},
		idents: append([]Identity(nil), cfg.Identities...), jwtCache: map[jwtKey]cachedJWT{}}
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

// JWTSVIDRequests counts the FetchJWTSVID calls answered so far (a
// cached token answers a call as a new one does).
func (s *Server) JWTSVIDRequests() uint64 { return s.jwtRequests.Load() }

// CurrentSVIDs returns the SVIDs being served now.
func (s *Server) CurrentSVIDs() []*x509svid.SVID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*x509svid.SVID(nil), s.cur.svids...)
}

// Start listens on socketPath (a stale socket file is replaced) and serves
// in its own goroutine until Stop. SVIDs past half of their lifetime (after
// a long Stop) are renewed first, as a restarting SPIRE agent renews them
// before it serves them.
func (s *Server) Start(socketPath string) error {
	abs, err := filepath.Abs(socketPath)
	if err != nil {
		return fmt.Errorf("svidtest: socket path %q: %w", socketPath, err)
	}
	if err := s.renewIfStale(); err != nil {
		return err
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
	lis, err := unixsock.Listen(abs, 0o600)
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
	s.scheduleActivationLocked()
	go func() { s.serveErr <- g.Serve(lis) }()
	s.log.Info("dev Workload API listening", zap.String("socket", "unix://"+abs), zap.Stringer("trust_domain", s.cfg.TrustDomain))
	return nil
}

// Stop ends every stream and closes the socket. The Server can Start
// again; a CA rotation under way resumes its schedule then.
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
	if s.caTimer != nil {
		s.caTimer.Stop()
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
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	return s.rotateSVIDsLocked()
}

func (s *Server) rotateSVIDsLocked() error {
	if err := s.issue(); err != nil {
		return err
	}
	s.mu.Lock()
	s.scheduleRotationLocked()
	s.mu.Unlock()
	return nil
}

// RotateCA rotates the main CA as SPIRE does: it prepares the next root and
// JWT key and pushes them in the bundles to every stream now, then, after
// Config.CAActivationDelay, activates them: new SVIDs signed by the new
// root are issued and pushed. The old root stays in the bundle for as long
// as anything it signed is valid. Each call prepares one more CA; they
// activate in order, each after its own delay. With
// Config.UnsafeImmediateCASwitch the new root signs at once.
func (s *Server) RotateCA() error {
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	if s.cfg.UnsafeImmediateCASwitch {
		if err := s.ca.Rotate(); err != nil {
			return err
		}
		s.log.Info("dev Workload API switched CA at once (unsafe immediate mode)")
		return s.rotateSVIDsLocked()
	}
	if err := s.ca.Prepare(); err != nil {
		return err
	}
	if err := s.publish(s.CurrentSVIDs()); err != nil {
		return err
	}
	s.mu.Lock()
	s.activate = append(s.activate, time.Now().Add(s.cfg.CAActivationDelay))
	s.scheduleActivationLocked()
	s.mu.Unlock()
	s.log.Info("dev Workload API prepared the next CA; its root is in the bundle", zap.Duration("activates_in", s.cfg.CAActivationDelay))
	return nil
}

// ActivateCA activates the oldest CA that RotateCA prepared now, without
// waiting for its delay, and pushes SVIDs signed by it. Its root has been
// in the bundle since RotateCA. It reports whether there was one.
func (s *Server) ActivateCA() (bool, error) { return s.activateCA(time.Time{}) }

// activateCA activates the oldest pending CA; a timer passes the time it
// was armed for, so that it does nothing if ActivateCA got there first.
func (s *Server) activateCA(armedFor time.Time) (bool, error) {
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	s.mu.Lock()
	if len(s.activate) == 0 || (!armedFor.IsZero() && !s.activate[0].Equal(armedFor)) {
		s.mu.Unlock()
		return false, nil
	}
	s.activate = s.activate[1:]
	s.scheduleActivationLocked()
	s.mu.Unlock()
	if !s.ca.Activate() {
		return false, nil
	}
	s.log.Info("dev Workload API activated the next CA; SVIDs re-issued")
	return true, s.rotateSVIDsLocked()
}

func (s *Server) renewIfStale() error {
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	for _, sv := range s.CurrentSVIDs() {
		issued := sv.Certificates[0].NotBefore.Add(backdate(s.cfg.TTL))
		if time.Since(issued) >= s.cfg.TTL/2 {
			return s.issue()
		}
	}
	return nil
}

// issue signs a new SVID per identity with the active CA and publishes it.
// Callers hold rotMu, except New, before anyone else can see the Server.
// SPIRE never issues an SVID that outlives its CA, so neither does this.
func (s *Server) issue() error {
	now := time.Now()
	idents := s.identities()
	svids := make([]*x509svid.SVID, 0, len(idents))
	for _, ident := range idents {
		sv, err := s.issueOne(ident, now)
		if err != nil {
			return err
		}
		svids = append(svids, sv)
	}
	if s.ca.Prune(now) {
		s.log.Info("dev Workload API dropped retired roots from the bundle: everything they signed has expired")
	}
	if err := s.publish(svids); err != nil {
		return err
	}
	s.log.Info("dev Workload API issued X.509-SVIDs", zap.Int("count", len(svids)))
	return nil
}

// issueOne signs ident's SVID with the active CA; it never outlives the root.
func (s *Server) issueOne(ident Identity, now time.Time) (*x509svid.SVID, error) {
	notAfter := now.Add(s.cfg.TTL)
	if root := s.ca.Root(); root.NotAfter.Before(notAfter) {
		notAfter = root.NotAfter
	}
	sv, err := s.ca.IssueX509SVID(ident.ID, now.Add(-backdate(s.cfg.TTL)), notAfter, ident.DNSNames...)
	if err != nil {
		return nil, err
	}
	sv.Hint = ident.Hint
	return sv, nil
}

// identities returns what is registered now.
func (s *Server) identities() []Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Identity(nil), s.idents...)
}

// AddIdentity registers ident while the server runs, as `spire-server
// entry create` does: its SVID is issued and pushed at once, with the
// SVIDs already served unchanged (SPIRE's agent signs only the new
// entry's). A second identity with ident's ID or hint is refused.
func (s *Server) AddIdentity(ident Identity) error {
	if ident.ID.TrustDomain() != s.cfg.TrustDomain {
		return fmt.Errorf("svidtest: identity %s is not in trust domain %s", ident.ID, s.cfg.TrustDomain)
	}
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	s.mu.Lock()
	for _, have := range s.idents {
		if have.ID == ident.ID || (ident.Hint != "" && have.Hint == ident.Hint) {
			s.mu.Unlock()
			return fmt.Errorf("svidtest: identity %s (hint %q) clashes with %s (hint %q)", ident.ID, ident.Hint, have.ID, have.Hint)
		}
	}
	s.idents = append(s.idents, ident)
	s.mu.Unlock()
	sv, err := s.issueOne(ident, time.Now())
	if err != nil {
		return err
	}
	return s.publish(append(s.CurrentSVIDs(), sv))
}

// RemoveIdentity stops serving id, as `spire-server entry delete` does:
// its SVID leaves the next X.509 response (the others stay as they are),
// and no JWT-SVID is minted for it any more. With no identity left, the
// streams answer PermissionDenied, as SPIRE's agent does to a workload
// that matches no entry. It reports whether id was registered.
func (s *Server) RemoveIdentity(id spiffeid.ID) (bool, error) {
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	s.mu.Lock()
	kept := s.idents[:0:0]
	for _, have := range s.idents {
		if have.ID != id {
			kept = append(kept, have)
		}
	}
	found := len(kept) != len(s.idents)
	s.idents = kept
	for k := range s.jwtCache {
		if k.id == id {
			delete(s.jwtCache, k)
		}
	}
	s.mu.Unlock()
	if !found {
		return false, nil
	}
	var svids []*x509svid.SVID
	for _, sv := range s.CurrentSVIDs() {
		if sv.ID != id {
			svids = append(svids, sv)
		}
	}
	return true, s.publish(svids)
}

// publish replaces what the streams serve and wakes them.
func (s *Server) publish(svids []*x509svid.SVID) error {
	p := &published{svids: svids, x509: map[string][]byte{}, jwt: map[string][]byte{}, changed: make(chan struct{})}
	cas := []*CA{s.ca}
	for _, fca := range s.federated {
		cas = append(cas, fca)
	}
	for _, ca := range cas {
		p.x509[ca.TrustDomain().IDString()] = concatDER(ca.X509Bundle().X509Authorities())
		jb := ca.JWTBundle()
		b, err := jb.Marshal()
		if err != nil {
			return fmt.Errorf("svidtest: marshal JWT bundle for %s: %w", ca.TrustDomain(), err)
		}
		p.jwt[ca.TrustDomain().IDString()] = b
		if p.jwtSet == nil {
			p.jwtSet = jwtbundle.NewSet(jb)
		} else {
			p.jwtSet.Add(jb)
		}
	}
	s.mu.Lock()
	old := s.cur
	s.cur = p
	s.mu.Unlock()
	if old != nil {
		close(old.changed)
	}
	return nil
}

// backdate is how far before issue NotBefore lies, for clock skew: 10s
// like SPIRE's server, but at most a tenth of a short TTL, so the SVID's
// lifetime (NotBefore..NotAfter, which SPIRE's half-life rule and the
// agent's "rotation overdue" rule measure) stays close to the TTL and a
// half-life rotation is never overdue.
func backdate(ttl time.Duration) time.Duration {
	return min(10*time.Second, ttl/10)
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

// scheduleActivationLocked arms the timer of the oldest pending CA
// activation, while the server runs.
func (s *Server) scheduleActivationLocked() {
	if s.caTimer != nil {
		s.caTimer.Stop()
	}
	if s.grpcSrv == nil || len(s.activate) == 0 {
		return
	}
	stopped, at := s.stopped, s.activate[0]
	s.caTimer = time.AfterFunc(time.Until(at), func() {
		select {
		case <-stopped:
			return
		default:
		}
		if _, err := s.activateCA(at); err != nil {
			s.log.Error("dev Workload API CA activation failed", zap.Error(err))
		}
	})
}

// snapshot returns what the streams serve now; its changed channel closes
// on the next change.
func (s *Server) snapshot() *published {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}
