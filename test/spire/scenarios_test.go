//go:build conformance

package spire

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/identity-agent/identity-agent/internal/fleettest"
)

// scenarios run against both Workload APIs. Each registers entries of its
// own (paths and hints no other scenario uses), so that on one shared
// SPIRE they run in parallel.
var scenarios = []scenario{
	{"files", scenarioFiles},
	{"rotation", scenarioRotation},
	{"jwt", scenarioJWT},
	{"entry-deleted", scenarioEntryDeleted},
	{"proxies", scenarioProxies},
	{"redis", scenarioRedis},
}

// scenarioFiles: selection by hint and by spiffe_id among several SVIDs,
// the key matching its certificate, the chain verifying to the bundle, the
// configured modes; `fetch` writes them once and exits 0, `run` keeps them
// and status is OK naming the selected SPIFFE IDs.
func scenarioFiles(t *testing.T, api workloadAPI) {
	byHint := api.AddEntry(t, entry{Path: "/files/by-hint", Hint: "files-hint"})
	byID := api.AddEntry(t, entry{Path: "/files/by-id", Hint: "files-other"})
	a := writeAgentConfig(t, api, `  - name: by-hint
    hint: files-hint
    dir: $DIR/hint
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    cert_mode: "0644"
    key_mode: "0600"
    bundle_mode: "0644"
  - name: by-id
    spiffe_id: `+byID.String()+`
    dir: $DIR/id
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    cert_mode: "0640"
    key_mode: "0400"
    bundle_mode: "0444"
`, "")
	if r := fleettest.Run(t, 60*time.Second, a.dir, nil, agentBin, "fetch", "--config", a.cfg); r.Code != 0 {
		t.Fatalf("fetch: %s", r)
	}
	check := func() {
		t.Helper()
		for _, o := range []struct {
			dir               string
			id                string
			cert, key, bundle os.FileMode
		}{
			{filepath.Join(a.dir, "hint"), byHint.String(), 0o644, 0o600, 0o644},
			{filepath.Join(a.dir, "id"), byID.String(), 0o640, 0o400, 0o444},
		} {
			leaf := svidFiles(t, mustID(t, o.id), filepath.Join(o.dir, "svid.pem"), filepath.Join(o.dir, "key.pem"), filepath.Join(o.dir, "bundle.pem"))
			if got := leaf.URIs[0].String(); got != o.id {
				t.Fatalf("%s: leaf URI %s, want %s", o.dir, got, o.id)
			}
			for f, want := range map[string]os.FileMode{"svid.pem": o.cert, "key.pem": o.key, "bundle.pem": o.bundle} {
				if got := mode(t, filepath.Join(o.dir, f)); got != want {
					t.Errorf("%s/%s: mode %o, want %o", o.dir, f, got, want)
				}
			}
		}
	}
	check()
	a.start(t)
	check()
	st := a.status(t)
	got := map[string]string{}
	for _, o := range st.Outputs {
		got[o.Name] = o.SpiffeID
	}
	if got["by-hint"] != byHint.String() || got["by-id"] != byID.String() {
		t.Fatalf("status outputs name %v, want by-hint=%s by-id=%s\n%s", got, byHint, byID, st.raw)
	}
}

// scenarioRotation: the Workload API rotates the SVID at half of its
// lifetime; the agent writes each one, and a reader reading the
// combined_file (key + chain in one file) in a tight loop across two
// rotations never reads a key that is not its certificate's.
func scenarioRotation(t *testing.T, api workloadAPI) {
	id := api.AddEntry(t, entry{Path: "/rotation", Hint: "rotation"})
	a := writeAgentConfig(t, api, `  - name: rot
    hint: rotation
    dir: $DIR/out
    combined_file: crt.pem
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
`, "")
	a.start(t)
	combined := filepath.Join(a.dir, "out", "crt.pem")

	var (
		reads, torn atomic.Int64
		mu          sync.Mutex
		serials     []string
		firstTorn   atomic.Value
		stop        = make(chan struct{})
		done        = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(combined)
			reads.Add(1)
			if err != nil {
				torn.Add(1)
				firstTorn.CompareAndSwap(nil, err.Error())
				continue
			}
			serial, err := parseCombined(b)
			if err != nil {
				torn.Add(1)
				firstTorn.CompareAndSwap(nil, err.Error())
				continue
			}
			mu.Lock()
			if len(serials) == 0 || serials[len(serials)-1] != serial {
				serials = append(serials, serial)
			}
			mu.Unlock()
		}
	}()
	// Two rotations: at half of the lifetime each, plus SPIRE's 5 s sync.
	fleettest.WaitFor(t, 2*api.TTL()+30*time.Second, "two rotations of the combined file", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(serials) >= 3, strings.Join(serials, " ")
	})
	close(stop)
	<-done
	if n := torn.Load(); n != 0 {
		t.Fatalf("%d torn reads of %d (first: %v)", n, reads.Load(), firstTorn.Load())
	}
	t.Logf("%s: %d reads of %s across %d rotations, 0 torn", api.Name(), reads.Load(), combined, len(serials)-1)
	// The separate files rotated with it, and still match.
	svidFiles(t, id, filepath.Join(a.dir, "out", "svid.pem"), filepath.Join(a.dir, "out", "key.pem"), filepath.Join(a.dir, "out", "bundle.pem"))
	st := a.waitStatus(t, 0, 30*time.Second)
	if st.Outputs[0].Rotations < 2 {
		t.Fatalf("status counts %d rotations, want >= 2\n%s", st.Outputs[0].Rotations, st.raw)
	}
}

// scenarioJWT: a JWT-SVID for two audiences and the JWKS that verifies
// it; the token is refreshed at half of its lifetime (SPIRE's agent
// answers the cached token until then); status shows the token's file,
// audiences, expiry and next fetch.
func scenarioJWT(t *testing.T, api workloadAPI) {
	id := api.AddEntry(t, entry{Path: "/jwt", Hint: "jwt"})
	a := writeAgentConfig(t, api, `  - name: jwt
    hint: jwt
    dir: $DIR/out
    cert_file: svid.pem
    key_file: key.pem
    jwt:
      - audience: [aud-a, aud-b]
        file: token.jwt
    jwt_bundle_file: jwks.json
`, "")
	a.start(t)
	tokenPath := filepath.Join(a.dir, "out", "token.jwt")
	read := func() *jwtsvid.SVID {
		t.Helper()
		tok, err := os.ReadFile(tokenPath)
		if err != nil {
			t.Fatal(err)
		}
		jwks, err := os.ReadFile(filepath.Join(a.dir, "out", "jwks.json"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := jwtbundle.Parse(api.TrustDomain(), jwks)
		if err != nil {
			t.Fatalf("jwks.json: %v", err)
		}
		sv, err := jwtsvid.ParseAndValidate(strings.TrimSpace(string(tok)), b, []string{"aud-a"})
		if err != nil {
			t.Fatalf("token.jwt does not verify with jwks.json: %v", err)
		}
		if sv.ID != id || !slices.Contains(sv.Audience, "aud-b") {
			t.Fatalf("token.jwt: sub %s aud %v, want %s [aud-a aud-b]", sv.ID, sv.Audience, id)
		}
		if m := mode(t, tokenPath); m != 0o600 {
			t.Fatalf("token.jwt mode %o, want 600", m)
		}
		return sv
	}
	first := read()
	st := a.status(t)
	j := st.Outputs[0].JWT
	if len(j) != 1 || j[0].File != "token.jwt" || !slices.Equal(j[0].Audience, []string{"aud-a", "aud-b"}) || !j[0].Expiry.Equal(first.Expiry) {
		t.Fatalf("status jwt = %+v, want token.jwt [aud-a aud-b] expiring %v\n%s", j, first.Expiry, st.raw)
	}
	issued := first.Claims["iat"]
	lifetime := api.TTL()
	half := first.Expiry.Add(-lifetime / 2)
	if d := j[0].NextFetch.Sub(half); d < -2*time.Second || d > 2*time.Second {
		t.Fatalf("next fetch %v, want about half of the lifetime (%v; iat %v)", j[0].NextFetch, half, issued)
	}
	// The refresh: a new token before the old one expires.
	asked := jwtRequests(api)
	var next *jwtsvid.SVID
	fleettest.WaitFor(t, lifetime, "JWT-SVID refreshed", func() (bool, string) {
		next = read()
		return next.Expiry.After(first.Expiry), next.Expiry.String()
	})
	if n := jwtRequests(api) - asked; asked >= 0 {
		t.Logf("%s: %d JWT-SVID requests for one refresh", api.Name(), n)
	}
	if now := time.Now(); !now.Before(first.Expiry) {
		t.Fatalf("token refreshed only at %v, after the old one expired (%v)", now, first.Expiry)
	}
	if st := a.waitStatus(t, 0, 30*time.Second); st.Outputs[0].JWT[0].LastError != "" {
		t.Fatalf("jwt last_error: %s", st.Outputs[0].JWT[0].LastError)
	}
}

// scenarioEntryDeleted: the entry of an output's SVID is deleted while the
// agent runs (its SVID leaves the Workload API response). The agent keeps
// the last good files, never deletes them; status is WARNING naming the
// output, then CRITICAL once the files on disk have expired; registering
// the entry again recovers without a restart.
func scenarioEntryDeleted(t *testing.T, api workloadAPI) {
	e := entry{Path: "/deleted", Hint: "deleted"}
	id := api.AddEntry(t, e)
	// Another SVID for this uid stays registered throughout: with none
	// left, SPIRE answers the whole stream PermissionDenied ("no identity
	// issued"), which scenarioLastEntryDeleted covers.
	api.AddEntry(t, entry{Path: "/deleted-keep", Hint: "deleted-keep"})
	a := writeAgentConfig(t, api, `  - name: gone
    hint: deleted
    dir: $DIR/out
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
`, "")
	a.start(t)
	out := filepath.Join(a.dir, "out")
	leaf := svidFiles(t, id, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem"), filepath.Join(out, "bundle.pem"))

	api.DeleteEntry(t, id)
	st := a.waitStatus(t, 1, 30*time.Second)
	if !anyContains(st.Reasons, "output gone") {
		t.Fatalf("WARNING does not name the output: %v", st.Reasons)
	}
	t.Logf("%s: entry deleted: exit %d %v", api.Name(), st.code, st.Reasons)
	// CRITICAL once the files expire (and not before they do).
	st = a.waitStatus(t, 2, time.Until(leaf.NotAfter)+30*time.Second)
	if time.Now().Before(leaf.NotAfter) {
		t.Fatalf("CRITICAL at %v, before the files expired (%v): %v", time.Now(), leaf.NotAfter, st.Reasons)
	}
	t.Logf("%s: files expired: exit %d %v", api.Name(), st.code, st.Reasons)
	// The last good files are still there, untouched.
	if got := svidFilesExpired(t, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem")); got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("files changed while the entry was gone: serial %s, want %s", got.SerialNumber, leaf.SerialNumber)
	}
	api.AddEntry(t, e)
	a.waitStatus(t, 0, 60*time.Second)
	svidFiles(t, id, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem"), filepath.Join(out, "bundle.pem"))
}

// soleScenarios need every entry of the uid to themselves, so they cannot
// share a SPIRE agent with the others: TestDev runs them like the rest
// (each scenario has a dev API of its own), TestSPIRE each on a cluster of
// its own (spireOnly).
var soleScenarios = []scenario{
	{"last-entry-deleted", scenarioLastEntryDeleted},
}

// scenarioLastEntryDeleted: the last entry matching the agent's uid is
// deleted while it runs. SPIRE then answers the X.509 stream (and the
// bundle streams) PermissionDenied, "no identity issued": status must say
// that, naming each output (not "Workload API unreachable"), WARNING, then
// CRITICAL once the files on disk expire; the files are kept untouched;
// registering the entry again recovers without a restart.
func scenarioLastEntryDeleted(t *testing.T, api workloadAPI) {
	e := entry{Path: "/last", Hint: "last"}
	id := api.AddEntry(t, e)
	dropDefaultIdentity(t, api)
	a := writeAgentConfig(t, api, `  - name: only
    hint: last
    dir: $DIR/out
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
  - name: also
    spiffe_id: `+id.String()+`
    dir: $DIR/also
    cert_file: svid.pem
    key_file: key.pem
`, "")
	a.start(t)
	out := filepath.Join(a.dir, "out")
	leaf := svidFiles(t, id, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem"), filepath.Join(out, "bundle.pem"))
	a.waitStatus(t, 0, 30*time.Second)

	api.DeleteEntry(t, id)
	st := a.waitStatus(t, 1, 60*time.Second)
	t.Logf("%s: last entry deleted: exit %d %v", api.Name(), st.code, st.Reasons)
	for _, name := range []string{"only", "also"} {
		if !anyContains(st.Reasons, "output "+name+": SVID "+id.String()+" no longer issued: no identity issued to this workload (uid ") {
			t.Fatalf("WARNING does not name output %s as no longer issued: %v", name, st.Reasons)
		}
	}
	if anyContains(st.Reasons, "unreachable") {
		t.Fatalf("a Workload API that answers PermissionDenied reported as unreachable: %v", st.Reasons)
	}
	// CRITICAL once the files expire (and not before they do).
	st = a.waitStatus(t, 2, time.Until(leaf.NotAfter)+30*time.Second)
	if time.Now().Before(leaf.NotAfter) {
		t.Fatalf("CRITICAL at %v, before the files expired (%v): %v", time.Now(), leaf.NotAfter, st.Reasons)
	}
	t.Logf("%s: files expired: exit %d %v", api.Name(), st.code, st.Reasons)
	if got := svidFilesExpired(t, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem")); got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("files changed while no identity was issued: serial %s, want %s", got.SerialNumber, leaf.SerialNumber)
	}
	if _, err := os.Stat(filepath.Join(a.dir, "also", "svid.pem")); err != nil {
		t.Fatalf("the other output's file: %v", err)
	}
	api.AddEntry(t, e)
	a.waitStatus(t, 0, 90*time.Second)
	svidFiles(t, id, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem"), filepath.Join(out, "bundle.pem"))
}

func anyContains(l []string, sub string) bool {
	for _, s := range l {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
