//go:build conformance

package spire

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/identity-agent/identity-agent/internal/fleettest"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// agentBin is identity-agent, built once per run.
var agentBin string

func TestMain(m *testing.M) { fleettest.MainWithAgent(m, "ia-conformance-", &agentBin) }

// entry is one registration: an SVID for spiffe://<td><Path> with Hint,
// issued to the uid running the tests.
type entry struct {
	Path          string
	Hint          string
	DNS           []string
	FederatesWith []spiffeid.TrustDomain
}

// workloadAPI is what a scenario needs of a Workload API: where it is, and
// registering and deleting entries while it runs. AddEntry and DeleteEntry
// return once the Workload API's own response shows the change, so a
// scenario never races the registration.
type workloadAPI interface {
	Name() string
	// Socket is the unix socket path of the Workload API.
	Socket() string
	TrustDomain() spiffeid.TrustDomain
	// TTL is the lifetime of the X.509- and JWT-SVIDs AddEntry registers
	// (rotated at half of it).
	TTL() time.Duration
	AddEntry(t testing.TB, e entry) spiffeid.ID
	DeleteEntry(t testing.TB, id spiffeid.ID)
}

// devTTL keeps `make test` short: a rotation every 6 s.
const devTTL = 12 * time.Second

// spireTTL is what the issue asks of real SPIRE: 60 s SVIDs, rotated by
// SPIRE's agent at half of their lifetime.
const spireTTL = 60 * time.Second

// devAPI is the development Workload API (pkg/svid/svidtest), one per
// scenario.
type devAPI struct{ srv *svidtest.Server }

func newDevAPI(t testing.TB) workloadAPI {
	srv := svidtest.Start(t, svidtest.Config{TTL: devTTL, JWTTTL: devTTL})
	return &devAPI{srv: srv}
}

func (d *devAPI) Name() string                      { return "dev" }
func (d *devAPI) Socket() string                    { return d.srv.SocketPath() }
func (d *devAPI) TrustDomain() spiffeid.TrustDomain { return d.srv.CA().TrustDomain() }
func (d *devAPI) TTL() time.Duration                { return devTTL }

func (d *devAPI) AddEntry(t testing.TB, e entry) spiffeid.ID {
	t.Helper()
	id := spiffeid.RequireFromPath(d.TrustDomain(), e.Path)
	if err := d.srv.AddIdentity(svidtest.Identity{ID: id, Hint: e.Hint, DNSNames: e.DNS}); err != nil {
		t.Fatal(err)
	}
	waitServed(t, d, id, true)
	return id
}

func (d *devAPI) DeleteEntry(t testing.TB, id spiffeid.ID) {
	t.Helper()
	if ok, err := d.srv.RemoveIdentity(id); err != nil || !ok {
		t.Fatalf("remove %s: %v (registered: %v)", id, err, ok)
	}
	waitServed(t, d, id, false)
}

// dropDefaultIdentity removes the dev API's default identity
// (spiffe://<td>/workload), so that the entries a scenario adds are the
// only ones issued, as on a SPIRE cluster of the scenario's own.
func dropDefaultIdentity(t testing.TB, api workloadAPI) {
	t.Helper()
	if d, ok := api.(*devAPI); ok {
		if _, err := d.srv.RemoveIdentity(spiffeid.RequireFromPath(d.TrustDomain(), "/workload")); err != nil {
			t.Fatal(err)
		}
	}
}

// jwtRequests is how many JWT-SVIDs the dev API was asked for, -1 where
// the API cannot tell (SPIRE).
func jwtRequests(api workloadAPI) int64 {
	if d, ok := api.(*devAPI); ok {
		return int64(d.srv.JWTSVIDRequests())
	}
	return -1
}

// spireAPI is one scenario's view of a shared SPIRE cluster: entries it
// adds are its own (distinct paths and hints), and are deleted when the
// scenario ends.
type spireAPI struct {
	c       *cluster
	mu      sync.Mutex
	entries map[spiffeid.ID]string // → entry ID
}

func newSPIREAPI(t testing.TB, c *cluster) *spireAPI {
	s := &spireAPI{c: c, entries: map[spiffeid.ID]string{}}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, eid := range s.entries {
			_, _ = c.run("spire-server", "entry", "delete", "-entryID", eid, "-socketPath", c.serverSock)
		}
	})
	return s
}

func (s *spireAPI) Name() string                      { return "spire" }
func (s *spireAPI) Socket() string                    { return s.c.agentSock }
func (s *spireAPI) TrustDomain() spiffeid.TrustDomain { return s.c.td }
func (s *spireAPI) TTL() time.Duration                { return spireTTL }

func (s *spireAPI) AddEntry(t testing.TB, e entry) spiffeid.ID {
	t.Helper()
	eid := s.c.createEntry(t, e, spireTTL)
	id := spiffeid.RequireFromPath(s.c.td, e.Path)
	s.mu.Lock()
	s.entries[id] = eid
	s.mu.Unlock()
	waitServed(t, s, id, true)
	return id
}

func (s *spireAPI) DeleteEntry(t testing.TB, id spiffeid.ID) {
	t.Helper()
	s.mu.Lock()
	eid, ok := s.entries[id]
	delete(s.entries, id)
	s.mu.Unlock()
	if !ok {
		t.Fatalf("no entry for %s", id)
	}
	s.c.deleteEntry(t, eid)
	waitServed(t, s, id, false)
}

// waitServed waits until the Workload API's X.509 response holds id (or,
// with want false, no longer does). SPIRE's agent syncs its entries every
// 5 s, so this takes up to that long there.
func waitServed(t testing.TB, api workloadAPI, id spiffeid.ID, want bool) {
	t.Helper()
	var last string
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ids, err := servedIDs(api.Socket())
		if err == nil && slices.Contains(ids, id.String()) == want {
			return
		}
		if !want && grpcstatus.Code(err) == codes.PermissionDenied {
			return // the last identity is gone: "no identity issued"
		}
		last = fmt.Sprint(ids, err)
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: %s served=%v not reached in 60s; last response: %s", api.Name(), id, want, last)
}

func servedIDs(sock string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	xc, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(xc.SVIDs))
	for _, sv := range xc.SVIDs {
		ids = append(ids, sv.ID.String())
	}
	return ids, nil
}

// TestDev runs every scenario against the development Workload API.
func TestDev(t *testing.T) {
	runScenarios(t, append(scenarios, soleScenarios...), func(t *testing.T) workloadAPI { return newDevAPI(t) })
}

// TestSPIRE runs every scenario against one real SPIRE server and agent
// (entries are per scenario, so they run in parallel), then the
// SPIRE-only ones, which stop SPIRE's processes or need a second server,
// each on a cluster of its own.
func TestSPIRE(t *testing.T) {
	bin := spireBin(t)
	c := startCluster(t, bin, clusterOpts{})
	runScenarios(t, scenarios, func(t *testing.T) workloadAPI { return newSPIREAPI(t, c) })
	for _, sc := range spireOnly {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, bin, c)
		})
	}
	for _, sc := range soleScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, newSPIREAPI(t, startCluster(t, bin, clusterOpts{})))
		})
	}
}

// scenario is one behaviour checked against a Workload API.
type scenario struct {
	name string
	run  func(t *testing.T, api workloadAPI)
}

func runScenarios(t *testing.T, list []scenario, newAPI func(t *testing.T) workloadAPI) {
	for _, sc := range list {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, newAPI(t))
		})
	}
}
