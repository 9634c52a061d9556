// Command proxybench measures pkg/tlsproxy against direct loopback on this
// machine, in one run: bulk throughput (iperf3), keep-alive request rate
// and latency (wrk), new mTLS connections per second, and CPU per GB.
//
// The proxies run in a child process (the same binary with -serve) so
// that their CPU time can be read from /proc without counting the load
// generators or the backends, which run in the parent or as iperf3/wrk.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

var (
	serveSide = flag.String("serve", "", "internal: run one side (server|client) of the pairs and print their addresses")
	targets   = flag.String("targets", "", "internal: name=addr,... backends for -serve")
	out       = flag.String("out", "", "also write the markdown report to this file")
	dur       = flag.Duration("duration", 5*time.Second, "length of each throughput/rate run")
	wrkConns  = flag.Int("wrk-conns", 32, "wrk connections for the keep-alive rate run")
	workers   = flag.Int("conn-workers", 16, "concurrent dialers for the new-connection run")
	profile   = flag.String("cpuprofile", "", "write a CPU profile of the proxy process to this file")
	only      = flag.String("only", "", "run only these parts: comma list of bulk,rate,latency,conns,attack,samesource,rotation")
	rounds    = flag.Int("rounds", 3, "rounds of every part; each round measures direct and every pair back to back, and the report gives medians")
	ghost     = flag.String("ghostunnel", "", "optional path to a ghostunnel binary, measured as a reference pair with the same SVIDs in the same run")
	pemDir    = flag.String("pemdir", "", "internal: where -serve reads the SVIDs and bundle")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *serveSide != "" {
		serve(*serveSide)
		return
	}
	if err := run(); err != nil {
		log.Fatalf("proxybench: %v", err)
	}
}

// ---------------------------------------------------------------- child

// serve runs one side of every pair under test, as a proxy host would:
// -serve server starts the server-side relays in front of the -targets
// backends, -serve client the client-side relays in front of the server
// side's addresses. Each prints name=address lines, then "ready", and runs
// until SIGTERM. Keys name the variant: NAME (ours, defaults),
// NAME-noresume, NAME-x25519, NAME-naive (go-spiffe tlsconfig + io.Copy)
// and NAME-plain (plaintext io.Copy relay).
func serve(side string) {
	serverSVID, err := x509svid.Load(filepath.Join(*pemDir, "server.crt"), filepath.Join(*pemDir, "server.key"))
	must(err)
	clientSVID, err := x509svid.Load(filepath.Join(*pemDir, "client.crt"), filepath.Join(*pemDir, "client.key"))
	must(err)
	bundle, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString("example.org"), filepath.Join(*pemDir, "bundle.pem"))
	must(err)
	bundles := x509bundle.NewSet(bundle)
	serverID, clientID := serverSVID.ID, clientSVID.ID
	ctx := context.Background()
	if *profile != "" {
		f, err := os.Create(*profile + "." + side)
		must(err)
		must(pprof.StartCPUProfile(f))
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	var proxies []*tlsproxy.Proxy
	start := func(name string, cfg tlsproxy.Config, svid *x509svid.SVID, opts ...tlsproxy.Option) {
		cfg.Name, cfg.Listen, cfg.MaxConns = name, "127.0.0.1:0", 4096
		p, err := tlsproxy.New(cfg, svid, bundles, opts...)
		must(err)
		must(p.Start(ctx))
		proxies = append(proxies, p)
		fmt.Printf("%s=%s\n", name, p.Addr())
	}
	for _, kv := range strings.Split(*targets, ",") {
		name, target, _ := strings.Cut(kv, "=")
		_, kind, _ := strings.Cut(name, "-")
		var opts []tlsproxy.Option
		switch kind {
		case "noresume":
			opts = append(opts, tlsproxy.WithSessionResumption(false))
		case "x25519":
			opts = append(opts, tlsproxy.WithCurvePreferences(tls.X25519))
		case "naive":
			if side == "server" {
				fmt.Printf("%s=%s\n", name, naiveServer(tlsconfig.MTLSServerConfig(serverSVID, bundles, tlsconfig.AuthorizeID(clientID)), target))
			} else {
				fmt.Printf("%s=%s\n", name, naiveClient(tlsconfig.MTLSClientConfig(clientSVID, bundles, tlsconfig.AuthorizeID(serverID)), target))
			}
			continue
		case "plain":
			fmt.Printf("%s=%s\n", name, plainRelay(target))
			continue
		}
		if side == "server" {
			start(name, tlsproxy.Config{Mode: tlsproxy.ModeServer, Target: target, Allow: []string{clientID.String()}}, serverSVID, opts...)
		} else {
			start(name, tlsproxy.Config{Mode: tlsproxy.ModeClient, Target: target, Allow: []string{serverID.String()}}, clientSVID, opts...)
		}
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, p := range proxies {
		_ = p.Shutdown(sctx)
	}
}

// plainRelay is one hop of the no-TLS ceiling: io.Copy between TCP
// sockets, which is splice(2) on Linux.
func plainRelay(target string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go naiveAccept(ln, func() (net.Conn, error) { return net.Dial("tcp", target) })
	return ln.Addr().String()
}

func naiveServer(cfg *tls.Config, target string) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	must(err)
	go naiveAccept(ln, func() (net.Conn, error) { return net.Dial("tcp", target) })
	return ln.Addr().String()
}

func naiveClient(cfg *tls.Config, target string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go naiveAccept(ln, func() (net.Conn, error) { return tls.Dial("tcp", target, cfg) })
	return ln.Addr().String()
}

func naiveAccept(ln net.Listener, dial func() (net.Conn, error)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer func() { _ = c.Close() }()
			up, err := dial()
			if err != nil {
				return
			}
			defer func() { _ = up.Close() }()
			done := make(chan struct{})
			go func() { _, _ = io.Copy(up, c); _ = up.Close(); close(done) }()
			_, _ = io.Copy(c, up)
			_ = c.Close()
			<-done
		}()
	}
}

// writePEMs issues the server and client SVIDs from a fresh CA and writes
// them to dir: NAME.crt/NAME.key for the children, NAME.pem (chain and key
// in one file) for ghostunnel, and bundle.pem.
func writePEMs(dir string) error {
	ca, err := svidtest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil {
		return err
	}
	now := time.Now()
	for _, s := range []struct {
		name string
		dns  []string
	}{{"server", []string{"localhost"}}, {"client", nil}} { // localhost: ghostunnel's client checks the host name too
		svid, err := ca.IssueX509SVID(spiffeid.RequireFromString("spiffe://example.org/"+s.name), now.Add(-time.Minute), now.Add(time.Hour), s.dns...)
		if err != nil {
			return err
		}
		certs, key, err := svid.Marshal()
		if err != nil {
			return err
		}
		for file, b := range map[string][]byte{".crt": certs, ".key": key, ".pem": append(certs, key...)} {
			if err := os.WriteFile(filepath.Join(dir, s.name+file), b, 0o600); err != nil {
				return err
			}
		}
	}
	b, err := ca.X509Bundle().Marshal()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "bundle.pem"), b, 0o600)
}

// side is one child process of proxybench -serve.
type side struct {
	cmd   *exec.Cmd
	addrs map[string]string
}

func startSide(ctx context.Context, which, pems, targets string) (*side, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "-serve", which, "-cpuprofile", *profile, "-pemdir", pems, "-targets", targets)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s side: %w", which, err)
	}
	sd := &side{cmd: cmd, addrs: map[string]string{}}
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		if sc.Text() == "ready" {
			ready = true
			break
		}
		k, v, _ := strings.Cut(sc.Text(), "=")
		sd.addrs[k] = v
	}
	if !ready {
		sd.stop()
		return nil, fmt.Errorf("%s side exited before it was ready", which)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return sd, nil
}

func (sd *side) stop() {
	_ = sd.cmd.Process.Signal(syscall.SIGTERM)
	_ = sd.cmd.Wait()
}

// ghostPair is a ghostunnel client → server pair in front of a backend.
type ghostPair struct {
	addr, version string
	pids          []int
	cmds          []*exec.Cmd
}

func startGhostunnel(ctx context.Context, bin, pems, backend string) (*ghostPair, error) {
	ver, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w: %s", bin, err, ver)
	}
	g := &ghostPair{version: strings.TrimSpace(strings.SplitN(string(ver), "\n", 2)[0])}
	srvPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cliPort, err := freePort()
	if err != nil {
		return nil, err
	}
	srvAddr, cliAddr := fmt.Sprintf("127.0.0.1:%d", srvPort), fmt.Sprintf("127.0.0.1:%d", cliPort)
	for _, args := range [][]string{
		{"server", "--listen", srvAddr, "--target", backend, "--keystore", filepath.Join(pems, "server.pem"),
			"--cacert", filepath.Join(pems, "bundle.pem"), "--allow-uri", "spiffe://example.org/client", "--quiet=all"},
		{"client", "--listen", cliAddr, "--target", fmt.Sprintf("localhost:%d", srvPort), "--keystore", filepath.Join(pems, "client.pem"),
			"--cacert", filepath.Join(pems, "bundle.pem"), "--verify-uri", "spiffe://example.org/server", "--quiet=all"},
	} {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			g.stop()
			return nil, fmt.Errorf("ghostunnel %s: %w", args[0], err)
		}
		g.cmds = append(g.cmds, cmd)
		g.pids = append(g.pids, cmd.Process.Pid)
	}
	g.addr = cliAddr
	for _, a := range []string{srvAddr, cliAddr} {
		if err := waitListening(a); err != nil {
			g.stop()
			return nil, fmt.Errorf("ghostunnel: %w", err)
		}
	}
	return g, nil
}

func (g *ghostPair) stop() {
	for _, c := range g.cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// --------------------------------------------------------------- parent

type result struct {
	name, direct, pair, ratio, note string
}

func run() error {
	want := func(part string) bool { return *only == "" || strings.Contains(","+*only+",", ","+part+",") }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if !want("bulk") && !want("rate") && !want("latency") && !want("conns") {
		rows, err := runHostile(ctx, want)
		if err != nil {
			return err
		}
		return writeReport("", rows)
	}
	for _, tool := range []string{"iperf3", "wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is required: %w", tool, err)
		}
	}

	// Backends.
	httpAddr, stopHTTP := httpBackend()
	defer stopHTTP()
	echoAddr, stopEcho := echoOnceBackend()
	defer stopEcho()
	iperfPort, err := freePort()
	if err != nil {
		return err
	}
	iperfSrv := exec.CommandContext(ctx, "iperf3", "-s", "-B", "127.0.0.1", "-p", strconv.Itoa(iperfPort))
	// Quiet: the readiness probe below makes iperf3 complain.
	iperfSrv.Stdout, iperfSrv.Stderr = io.Discard, io.Discard
	if err := iperfSrv.Start(); err != nil {
		return fmt.Errorf("iperf3 -s: %w", err)
	}
	defer func() { _ = iperfSrv.Process.Kill(); _ = iperfSrv.Wait() }()
	iperfAddr := fmt.Sprintf("127.0.0.1:%d", iperfPort)
	if err := waitListening(iperfAddr); err != nil {
		return err
	}

	// SVIDs for both sides, as PEM files the children (and ghostunnel) load.
	pems, err := os.MkdirTemp("", "proxybench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(pems) }()
	if err := writePEMs(pems); err != nil {
		return err
	}

	// Each side of the pairs in its own child process, as on two hosts.
	backends := fmt.Sprintf("iperf=%s,iperf-naive=%s,iperf-plain=%s,http=%s,http-naive=%s,echo=%s,echo-noresume=%s,echo-x25519=%s",
		iperfAddr, iperfAddr, iperfAddr, httpAddr, httpAddr, echoAddr, echoAddr, echoAddr)
	srvSide, err := startSide(ctx, "server", pems, backends)
	if err != nil {
		return err
	}
	defer srvSide.stop()
	var upstreams []string
	for k, v := range srvSide.addrs {
		upstreams = append(upstreams, k+"="+v)
	}
	cliSide, err := startSide(ctx, "client", pems, strings.Join(upstreams, ","))
	if err != nil {
		return err
	}
	defer cliSide.stop()
	addrs := cliSide.addrs
	pids := []int{srvSide.cmd.Process.Pid, cliSide.cmd.Process.Pid}
	ours := func(key string) target { return target{key, addrs[key], pids} }
	bulkPairs := []target{ours("iperf"), ours("iperf-naive"), ours("iperf-plain")}
	ratePairs := []target{ours("http"), ours("http-naive")}
	var ghostVersion string
	if *ghost != "" {
		g, err := startGhostunnel(ctx, *ghost, pems, iperfAddr)
		if err != nil {
			return err
		}
		defer g.stop()
		bulkPairs = append(bulkPairs, target{"iperf-ghostunnel", g.addr, g.pids})
		h, err := startGhostunnel(ctx, *ghost, pems, httpAddr)
		if err != nil {
			return err
		}
		defer h.stop()
		ratePairs = append(ratePairs, target{"http-ghostunnel", h.addr, h.pids})
		ghostVersion = g.version
	}

	var rows []result
	var notes []string

	for _, part := range []struct {
		name string
		run  func(ctx context.Context) ([]result, error)
	}{
		{"bulk", func(ctx context.Context) ([]result, error) {
			return bulk(ctx, iperfPort, iperfSrv.Process.Pid, bulkPairs)
		}},
		{"rate", func(ctx context.Context) ([]result, error) {
			return rate(ctx, "http://"+httpAddr+"/", ratePairs)
		}},
		{"latency", func(ctx context.Context) ([]result, error) {
			return latency(ctx, "http://"+httpAddr+"/", "http://"+addrs["http"]+"/")
		}},
		{"conns", func(ctx context.Context) ([]result, error) {
			return conns(ctx, echoAddr, addrs, pids)
		}},
	} {
		if !want(part.name) {
			continue
		}
		r, err := part.run(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", part.name, err)
		}
		rows = append(rows, r...)
	}

	notes = append(notes,
		fmt.Sprintf("Machine: %d CPUs (GOMAXPROCS %d), %s, %s; load average (1/5/15 min) when written: %s. Other load on the machine makes the numbers noisy.",
			runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), cpuModel(), loadAvg()),
		"Pair = plaintext client → client-mode proxy → mTLS (TLS 1.3, ECDSA P-256 SVIDs) → server-mode proxy → plaintext backend, all on 127.0.0.1; each side of a pair runs in its own child process (as on two hosts), and CPU figures are both processes'.",
		fmt.Sprintf("Rounds: each of %d rounds measures direct and then every pair back to back; a ratio is pair / direct of the same round, and the table gives the medians (ranges in the notes column).", *rounds),
		"Naive reference rows: the same SVIDs through go-spiffe tlsconfig.MTLSServerConfig/MTLSClientConfig with io.Copy and no session cache, in the same processes and run, as a straightforward Go TLS proxy would do it.",
		"Resumption: TLS 1.3 session tickets (server) + ClientSessionCache (client); resumed sessions are re-verified in VerifyConnection (verified chains cached per bundle) and bound to the presented SVID. Default key exchange is Go's X25519MLKEM768 hybrid.",
		"Data path: pooled buffers taken only when data is there, 64 KiB at first and 512 KiB for a stream whose reads fill them (within a 16 MiB budget per proxy); the TLS records of a chunk written with one write(2), received records read ahead so several are decrypted per read(2); TCP_NODELAY (Go default). splice(2) is not usable: one side of every hop is TLS in user space (no kTLS on this kernel: tcp_available_ulp lacks tls).",
		fmt.Sprintf("New connections: %d concurrent dialers, each dials, sends one line, reads the reply and closes.", *workers))
	if ghostVersion != "" {
		notes = append(notes, fmt.Sprintf("ghostunnel rows: %s, a client and a server process per pair with the same SVIDs as PEM files (--keystore, --cacert, --allow-uri/--verify-uri); CPU is both processes'. It is not part of the repository: pass -ghostunnel PATH to include it.", ghostVersion))
	}
	// The hostile parts last, with the children stopped: they measure
	// outcomes, and the attack wants the CPU the pairs would take.
	srvSide.stop()
	cliSide.stop()
	hostile, err := runHostile(ctx, want)
	if err != nil {
		return err
	}
	return writeReport(render(rows, notes), hostile)
}

// measured is one pair's numbers over the rounds.
type measured struct {
	values, ratios []float64
	cpuPerUnit     []float64 // proxy CPU: seconds per GB for bulk, µs per request or connection for rates
}

func (m *measured) add(v, direct, cpuPerUnit float64) {
	m.values = append(m.values, v)
	m.ratios = append(m.ratios, v/direct)
	m.cpuPerUnit = append(m.cpuPerUnit, cpuPerUnit)
}

// ratioRange is "min–max" of the per-round ratios, to show the noise.
func (m *measured) ratioRange() string {
	return fmt.Sprintf("%s–%s", pct(slices.Min(m.ratios)), pct(slices.Max(m.ratios)))
}

// target is a pair under test: where to send load and whose CPU to read.
type target struct {
	key  string
	addr string
	pids []int
}

func bulk(ctx context.Context, directPort, iperfPid int, pairs []target) ([]result, error) {
	var direct, endsPerGB []float64
	got := make([]measured, len(pairs))
	for range *rounds {
		d, _, _, err := iperf(ctx, directPort)
		if err != nil {
			return nil, err
		}
		direct = append(direct, d)
		for i, pr := range pairs {
			cpu0, srv0 := cpuSeconds(pr.pids...), cpuSeconds(iperfPid)
			bps, bytes, cli, err := iperf(ctx, mustPort(pr.addr))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", pr.key, err)
			}
			gb := float64(bytes) / 1e9
			got[i].add(bps, d, (cpuSeconds(pr.pids...)-cpu0)/gb)
			if pr.key == "iperf-plain" {
				endsPerGB = append(endsPerGB, (cli+cpuSeconds(iperfPid)-srv0)/gb)
			}
		}
	}
	dm := median(direct)
	gbit := func(v float64) string { return fmt.Sprintf("%.2f Gbit/s", v/1e9) }
	var rows []result
	for i, pr := range pairs {
		m := &got[i]
		r := result{direct: gbit(dm), pair: gbit(median(m.values)), ratio: pct(median(m.ratios))}
		cpu := fmt.Sprintf("%.2f CPU-s/GB", median(m.cpuPerUnit))
		switch pr.key {
		case "iperf":
			r.name = fmt.Sprintf("Bulk throughput (iperf3, 1 stream, %s × %d rounds)", dur, *rounds)
			r.note = fmt.Sprintf("target ≥ 45%%; rounds %s", m.ratioRange())
			rows = append(rows, r, result{"Proxy CPU per GB moved (both proxies, during iperf3)", "–", cpu, "–", "median of the rounds"})
			continue
		case "iperf-naive":
			r.name, r.note = "Reference: naive go-spiffe + io.Copy pair, bulk", cpu
		case "iperf-plain":
			r.name, r.note = "Reference: plaintext relay pair (io.Copy = splice, no TLS), bulk", "ceiling for two relays on this box; "+cpu
			if len(endsPerGB) > 0 {
				// The most any user-space TLS pair could do here: iperf3's own
				// CPU, the no-copy relay's, and AES-GCM once each way, all on
				// runtime.NumCPU() cores with nothing else running.
				aead := aesGCMCPUPerGB()
				perGB := median(endsPerGB) + median(m.cpuPerUnit) + aead
				bound := float64(runtime.NumCPU()) / perGB * 8e9
				rows = append(rows, r, result{"Bound: best any user-space TLS pair could do here", gbit(dm), gbit(bound), pct(bound / dm),
					fmt.Sprintf("%d cores ÷ (iperf3 ends %.2f + no-TLS relays %.2f + AES-128-GCM seal+open %.2f CPU-s/GB)",
						runtime.NumCPU(), median(endsPerGB), median(m.cpuPerUnit), aead)})
				continue
			}
		case "iperf-ghostunnel":
			r.name, r.note = "Reference: ghostunnel pair, bulk", fmt.Sprintf("%s; rounds %s", cpu, m.ratioRange())
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func rate(ctx context.Context, directURL string, pairs []target) ([]result, error) {
	var direct []float64
	got := make([]measured, len(pairs))
	for range *rounds {
		d, _, _, err := wrk(ctx, directURL, *wrkConns, *dur)
		if err != nil {
			return nil, err
		}
		direct = append(direct, d)
		for i, pr := range pairs {
			cpu0 := cpuSeconds(pr.pids...)
			start := time.Now()
			r, _, _, err := wrk(ctx, "http://"+pr.addr+"/", *wrkConns, *dur)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", pr.key, err)
			}
			got[i].add(r, d, (cpuSeconds(pr.pids...)-cpu0)/(r*time.Since(start).Seconds())*1e6)
		}
	}
	dm := fmt.Sprintf("%.0f", median(direct))
	var rows []result
	for i, pr := range pairs {
		m := &got[i]
		r := result{direct: dm, pair: fmt.Sprintf("%.0f", median(m.values)), ratio: pct(median(m.ratios)),
			note: fmt.Sprintf("%.1f µs proxy CPU per request; rounds %s", median(m.cpuPerUnit), m.ratioRange())}
		switch pr.key {
		case "http":
			r.name = fmt.Sprintf("Keep-alive requests/s (wrk -c%d, %s × %d rounds)", *wrkConns, dur, *rounds)
			r.note = "target ≥ 30%; " + r.note
		case "http-naive":
			r.name = "Reference: naive go-spiffe + io.Copy pair, keep-alive requests/s"
		case "http-ghostunnel":
			r.name = "Reference: ghostunnel pair, keep-alive requests/s"
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// aesGCMCPUPerGB is the CPU seconds to seal and then open 1 GB in 16 KiB
// TLS records with AES-128-GCM (TLS 1.3's suite on AES-NI hardware), hot
// in cache, so a lower bound on what the pair's crypto costs.
func aesGCMCPUPerGB() float64 {
	block, err := aes.NewCipher(make([]byte, 16))
	must(err)
	aead, err := cipher.NewGCM(block)
	must(err)
	nonce := make([]byte, aead.NonceSize())
	plain := make([]byte, 16<<10)
	sealed := make([]byte, 0, len(plain)+aead.Overhead())
	opened := make([]byte, 0, len(plain))
	r := testing.Benchmark(func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			sealed = aead.Seal(sealed[:0], nonce, plain, nil)
			if opened, err = aead.Open(opened[:0], nonce, sealed, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	return float64(r.NsPerOp()) / float64(len(plain)) // ns per byte = s per GB
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func latency(ctx context.Context, directURL, pairURL string) ([]result, error) {
	d := *dur * 3 / 5
	var d50s, d99s, p50s, p99s []float64
	for range *rounds {
		_, d50, d99, err := wrk(ctx, directURL, 1, d)
		if err != nil {
			return nil, err
		}
		_, p50, p99, err := wrk(ctx, pairURL, 1, d)
		if err != nil {
			return nil, err
		}
		d50s, d99s = append(d50s, float64(d50)), append(d99s, float64(d99))
		p50s, p99s = append(p50s, float64(p50)), append(p99s, float64(p99))
	}
	med := func(v []float64) time.Duration { return time.Duration(median(v)) }
	d50, d99, p50, p99 := med(d50s), med(d99s), med(p50s), med(p99s)
	return []result{
		{fmt.Sprintf("Latency p50 (wrk -c1, %d rounds)", *rounds), fmtDur(d50), fmtDur(p50),
			fmt.Sprintf("+%s/hop", fmtDur((p50-d50)/2)), "target < 100µs added per hop (2 hops)"},
		{fmt.Sprintf("Latency p99 (wrk -c1, %d rounds)", *rounds), fmtDur(d99), fmtDur(p99), fmt.Sprintf("+%s/hop", fmtDur((p99-d99)/2)), ""},
	}, nil
}

func conns(ctx context.Context, echoAddr string, addrs map[string]string, pids []int) ([]result, error) {
	variants := []struct{ name, addr, note string }{
		{"New connections/s through the pair, TLS 1.3 resumption (default)", addrs["echo"], "target ≥ 1,500/s"},
		{"New connections/s through the pair, full handshakes", addrs["echo-noresume"], "WithSessionResumption(false)"},
		{"New connections/s through the pair, resumption + X25519 only", addrs["echo-x25519"], "WithCurvePreferences(tls.X25519): no post-quantum hybrid"},
	}
	var direct []float64
	got := make([]measured, len(variants))
	for range *rounds {
		d, err := connRate(ctx, echoAddr, *workers, *dur*3/5)
		if err != nil {
			return nil, err
		}
		direct = append(direct, d)
		for i, v := range variants {
			cpu0 := cpuSeconds(pids...)
			start := time.Now()
			r, err := connRate(ctx, v.addr, *workers, *dur)
			if err != nil {
				return nil, err
			}
			got[i].add(r, d, (cpuSeconds(pids...)-cpu0)/(r*time.Since(start).Seconds())*1e6)
		}
	}
	var rows []result
	for i, v := range variants {
		m := &got[i]
		rows = append(rows, result{v.name, fmt.Sprintf("%.0f (plaintext)", median(direct)), fmt.Sprintf("%.0f", median(m.values)),
			pct(median(m.ratios)), fmt.Sprintf("%s; %.0f µs proxy CPU per connection; rounds %.0f–%.0f/s",
				v.note, median(m.cpuPerUnit), slices.Min(m.values), slices.Max(m.values))})
	}
	return rows, nil
}

func render(rows []result, notes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# pkg/tlsproxy benchmarks\n\nGenerated by `bench/proxy/run.sh` on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	b.WriteString("| measurement | direct | through proxy pair | pair / direct | note |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.name, r.direct, r.pair, r.ratio, r.note)
	}
	b.WriteString("\n")
	for _, n := range notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	return b.String()
}

func pct(f float64) string { return fmt.Sprintf("%.0f%%", f*100) }

func fmtDur(d time.Duration) string {
	if d < time.Millisecond && d > -time.Millisecond {
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// iperf runs one client for *dur and returns received bits/s and bytes,
// and the client's CPU seconds.
func iperf(ctx context.Context, port int) (float64, int64, float64, error) {
	secs := strconv.Itoa(int(dur.Seconds()))
	var (
		cmd  *exec.Cmd
		outb []byte
		err  error
	)
	// The iperf3 server runs one test at a time; the previous pair's relays
	// may still be closing their connections to it for a moment.
	for try := 0; ; try++ {
		cmd = exec.CommandContext(ctx, "iperf3", "-c", "127.0.0.1", "-p", strconv.Itoa(port), "-t", secs, "-J")
		outb, err = cmd.Output()
		if try == 20 || !bytes.Contains(outb, []byte("server is busy")) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return 0, 0, 0, fmt.Errorf("iperf3 -c port %d: %w: %s", port, err, outb)
	}
	var r struct {
		End struct {
			SumReceived struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(outb, &r); err != nil {
		return 0, 0, 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if r.Error != "" {
		return 0, 0, 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r.End.SumReceived.BitsPerSecond, r.End.SumReceived.Bytes, cpu.Seconds(), nil
}

var (
	reqRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	latRe = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
)

// wrk returns requests/s and p50/p99 latency.
func wrk(ctx context.Context, url string, conns int, d time.Duration) (float64, time.Duration, time.Duration, error) {
	threads := min(2, conns)
	cmd := exec.CommandContext(ctx, "wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency", url)
	outb, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("wrk %s: %w: %s", url, err, outb)
	}
	m := reqRe.FindSubmatch(outb)
	if m == nil {
		return 0, 0, 0, fmt.Errorf("wrk output: no Requests/sec: %s", outb)
	}
	if bytes.Contains(outb, []byte("Non-2xx")) || bytes.Contains(outb, []byte("Socket errors")) {
		return 0, 0, 0, fmt.Errorf("wrk reported errors: %s", outb)
	}
	rate, _ := strconv.ParseFloat(string(m[1]), 64)
	lat := map[string]time.Duration{}
	for _, l := range latRe.FindAllSubmatch(outb, -1) {
		v, _ := strconv.ParseFloat(string(l[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(l[3])]
		lat[string(l[1])] = time.Duration(v * float64(unit))
	}
	return rate, lat["50"], lat["99"], nil
}

// connRate dials addr from n goroutines for d, each connection sending a
// line and reading the reply to EOF; it returns completed connections/s.
func connRate(ctx context.Context, addr string, n int, d time.Duration) (float64, error) {
	var done, failed atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := oneConn(addr, buf); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if f := failed.Load(); f > done.Load()/100 {
		return 0, fmt.Errorf("new connections to %s: %d of %d failed: %v", addr, f, f+done.Load(), firstErr.Load())
	}
	return float64(done.Load()) / elapsed.Seconds(), nil
}

func oneConn(addr string, buf []byte) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	got := 0
	for {
		n, err := c.Read(buf)
		got += n
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if got != 3 {
		return fmt.Errorf("reply of %d bytes", got)
	}
	return nil
}

func httpBackend() (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	body := []byte("hello, world\n")
	s := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(body)
	})}
	go func() { _ = s.Serve(ln) }()
	return ln.Addr().String(), func() { _ = s.Close() }
}

// echoOnceBackend reads one line, answers "ok\n" and closes.
func echoOnceBackend() (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					_, _ = c.Write([]byte("ok\n"))
				}
			}()
		}
	}()
	return ln.Addr().String(), func() { _ = ln.Close() }
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func mustPort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	must(err)
	n, err := strconv.Atoi(p)
	must(err)
	return n
}

func waitListening(addr string) error {
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			return c.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not start listening", addr)
}

// cpuSeconds is the user+system CPU time of pids, from /proc/<pid>/stat.
func cpuSeconds(pids ...int) float64 {
	var total float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		must(err)
		// Fields after the parenthesised command name; utime and stime are fields 14 and 15.
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		utime, _ := strconv.ParseFloat(fields[11], 64)
		stime, _ := strconv.ParseFloat(fields[12], 64)
		const clkTck = 100 // USER_HZ on Linux
		total += (utime + stime) / clkTck
	}
	return total
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			_, v, _ := strings.Cut(l, ":")
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadAvg reports what else the machine was doing, so a reader can judge
// the numbers.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
