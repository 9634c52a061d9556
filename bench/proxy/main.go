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
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/identity-agent/identity-agent/internal/devapi"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

var (
	serveMode = flag.Bool("serve", false, "internal: run the proxies and print their addresses")
	targets   = flag.String("targets", "", "internal: name=addr,... backends for -serve")
	out       = flag.String("out", "", "also write the markdown report to this file")
	dur       = flag.Duration("duration", 5*time.Second, "length of each throughput/rate run")
	wrkConns  = flag.Int("wrk-conns", 32, "wrk connections for the keep-alive rate run")
	workers   = flag.Int("conn-workers", 16, "concurrent dialers for the new-connection run")
	profile   = flag.String("cpuprofile", "", "write a CPU profile of the proxy process to this file")
	only      = flag.String("only", "", "run only these parts: comma list of bulk,rate,latency,conns")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *serveMode {
		serve()
		return
	}
	if err := run(); err != nil {
		log.Fatalf("proxybench: %v", err)
	}
}

// ---------------------------------------------------------------- child

// serve starts one server/client proxy pair per backend (plus a pair
// without session resumption for the echo backend) and prints
// name=client-proxy-address lines, then waits for SIGTERM.
func serve() {
	ca, err := devapi.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	must(err)
	now := time.Now()
	serverSVID, err := ca.IssueX509SVID(spiffeid.RequireFromString("spiffe://example.org/server"), now.Add(-time.Minute), now.Add(time.Hour))
	must(err)
	clientSVID, err := ca.IssueX509SVID(spiffeid.RequireFromString("spiffe://example.org/client"), now.Add(-time.Minute), now.Add(time.Hour))
	must(err)
	bundles := x509bundle.NewSet(ca.X509Bundle())
	ctx := context.Background()
	if *profile != "" {
		f, err := os.Create(*profile)
		must(err)
		must(pprof.StartCPUProfile(f))
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	var proxies []*tlsproxy.Proxy
	for _, kv := range strings.Split(*targets, ",") {
		name, target, _ := strings.Cut(kv, "=")
		variants := []variant{{"", nil}}
		if name == "echo" {
			variants = append(variants,
				variant{"-noresume", []tlsproxy.Option{tlsproxy.WithSessionResumption(false)}},
				variant{"-x25519", []tlsproxy.Option{tlsproxy.WithCurvePreferences(tls.X25519)}})
		}
		for _, v := range variants {
			srv, err := tlsproxy.New(tlsproxy.Config{Name: name + v.suffix + "-srv", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
				Target: target, Allow: []string{"spiffe://example.org/client"}, MaxConns: 4096}, serverSVID, bundles, v.opts...)
			must(err)
			must(srv.Start(ctx))
			cli, err := tlsproxy.New(tlsproxy.Config{Name: name + v.suffix + "-cli", Mode: tlsproxy.ModeClient, Listen: "127.0.0.1:0",
				Target: srv.Addr().String(), Allow: []string{"spiffe://example.org/server"}, MaxConns: 4096}, clientSVID, bundles, v.opts...)
			must(err)
			must(cli.Start(ctx))
			proxies = append(proxies, srv, cli)
			fmt.Printf("%s%s=%s\n", name, v.suffix, cli.Addr())
		}
	}
	// A naive reference pair in the same process: go-spiffe's tlsconfig
	// with io.Copy, as a straightforward Go TLS proxy would do it.
	for _, kv := range strings.Split(*targets, ",") {
		name, target, _ := strings.Cut(kv, "=")
		if name == "echo" {
			continue
		}
		srvAddr := naiveServer(tlsconfig.MTLSServerConfig(serverSVID, bundles, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/client"))), target)
		cliAddr := naiveClient(tlsconfig.MTLSClientConfig(clientSVID, bundles, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/server"))), srvAddr)
		fmt.Printf("%s-naive=%s\n", name, cliAddr)
		if name == "iperf" {
			// Ceiling for any pair of relays: plaintext, io.Copy between TCP
			// sockets (splice(2) on Linux), no crypto.
			dial := func(addr string) func() (net.Conn, error) {
				return func() (net.Conn, error) { return net.Dial("tcp", addr) }
			}
			ln2, err := net.Listen("tcp", "127.0.0.1:0")
			must(err)
			go naiveAccept(ln2, dial(target))
			ln1, err := net.Listen("tcp", "127.0.0.1:0")
			must(err)
			go naiveAccept(ln1, dial(ln2.Addr().String()))
			fmt.Printf("iperf-plain=%s\n", ln1.Addr())
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

type variant struct {
	suffix string
	opts   []tlsproxy.Option
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
	for _, tool := range []string{"iperf3", "wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is required: %w", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

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

	// Proxies in a child process.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.CommandContext(ctx, self, "-serve", "-cpuprofile", *profile, "-targets",
		fmt.Sprintf("iperf=%s,http=%s,echo=%s", iperfAddr, httpAddr, echoAddr))
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return fmt.Errorf("start proxies: %w", err)
	}
	defer func() { _ = child.Process.Signal(syscall.SIGTERM); _ = child.Wait() }()
	addrs := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
		k, v, _ := strings.Cut(sc.Text(), "=")
		addrs[k] = v
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	pid := child.Process.Pid

	var rows []result
	var notes []string

	want := func(part string) bool { return *only == "" || strings.Contains(","+*only+",", ","+part+",") }
	for _, part := range []struct {
		name string
		run  func(ctx context.Context, addrs map[string]string, pid int) ([]result, error)
	}{
		{"bulk", func(ctx context.Context, addrs map[string]string, pid int) ([]result, error) {
			return bulk(ctx, iperfPort, mustPort(addrs["iperf"]), mustPort(addrs["iperf-naive"]), mustPort(addrs["iperf-plain"]), pid)
		}},
		{"rate", func(ctx context.Context, addrs map[string]string, _ int) ([]result, error) {
			return rate(ctx, "http://"+httpAddr+"/", "http://"+addrs["http"]+"/", "http://"+addrs["http-naive"]+"/")
		}},
		{"latency", func(ctx context.Context, addrs map[string]string, _ int) ([]result, error) {
			return latency(ctx, "http://"+httpAddr+"/", "http://"+addrs["http"]+"/")
		}},
		{"conns", func(ctx context.Context, addrs map[string]string, pid int) ([]result, error) {
			return conns(ctx, echoAddr, addrs, pid)
		}},
	} {
		if !want(part.name) {
			continue
		}
		r, err := part.run(ctx, addrs, pid)
		if err != nil {
			return fmt.Errorf("%s: %w", part.name, err)
		}
		rows = append(rows, r...)
	}

	notes = append(notes,
		fmt.Sprintf("Machine: %d CPUs (GOMAXPROCS %d), %s, %s; load average (1/5/15 min) when written: %s. Other load on the machine makes the numbers noisy.",
			runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), cpuModel(), loadAvg()),
		"Pair = plaintext client → client-mode proxy → mTLS (TLS 1.3, ECDSA P-256 SVIDs) → server-mode proxy → plaintext backend, all on 127.0.0.1; both proxies run in one child process.",
		"Reference rows: the same SVIDs through go-spiffe tlsconfig.MTLSServerConfig/MTLSClientConfig with io.Copy and no session cache, in the same process and run, as a straightforward Go TLS proxy would do it.",
		"Resumption: TLS 1.3 session tickets (server) + ClientSessionCache (client); resumed sessions are re-verified in VerifyConnection (verified chains cached per bundle) and bound to the presented SVID. Default key exchange is Go's X25519MLKEM768 hybrid.",
		"Data path: 64 KiB pooled buffers taken only when data is there; the TLS records of a chunk written with one write(2), received records read ahead so several are decrypted per read(2); TCP_NODELAY (Go default). splice(2) is not usable: one side of every hop is TLS in user space (no kTLS on this kernel: tcp_available_ulp lacks tls).",
		fmt.Sprintf("New connections: %d concurrent dialers, each dials, sends one line, reads the reply and closes.", *workers))
	report := render(rows, notes)
	fmt.Print(report)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(report), 0o644); err != nil { //nolint:gosec // a report for humans
			return err
		}
	}
	return nil
}

func bulk(ctx context.Context, directPort, pairPort, naivePort, plainPort, pid int) ([]result, error) {
	directBps, _, err := iperf(ctx, directPort)
	if err != nil {
		return nil, err
	}
	cpu0 := cpuSeconds(pid)
	pairBps, pairBytes, err := iperf(ctx, pairPort)
	if err != nil {
		return nil, err
	}
	cpu := cpuSeconds(pid) - cpu0
	cpu0 = cpuSeconds(pid)
	naiveBps, naiveBytes, err := iperf(ctx, naivePort)
	if err != nil {
		return nil, err
	}
	naiveCPU := cpuSeconds(pid) - cpu0
	cpu0 = cpuSeconds(pid)
	plainBps, plainBytes, err := iperf(ctx, plainPort)
	if err != nil {
		return nil, err
	}
	plainCPU := cpuSeconds(pid) - cpu0
	gb, naiveGB := float64(pairBytes)/1e9, float64(naiveBytes)/1e9
	return []result{
		{"Bulk throughput (iperf3, 1 stream, " + dur.String() + ")",
			fmt.Sprintf("%.2f Gbit/s", directBps/1e9), fmt.Sprintf("%.2f Gbit/s", pairBps/1e9),
			pct(pairBps / directBps), "target ≥ 45%"},
		{"Proxy CPU per GB moved (both proxies, during iperf3)", "–",
			fmt.Sprintf("%.2f CPU-s/GB", cpu/gb), "–", fmt.Sprintf("%.2f CPU-s over %.2f GB", cpu, gb)},
		{"Reference: naive go-spiffe + io.Copy pair, bulk", fmt.Sprintf("%.2f Gbit/s", directBps/1e9),
			fmt.Sprintf("%.2f Gbit/s", naiveBps/1e9), pct(naiveBps / directBps), fmt.Sprintf("%.2f CPU-s/GB", naiveCPU/naiveGB)},
		{"Reference: plaintext relay pair (io.Copy = splice, no TLS), bulk", fmt.Sprintf("%.2f Gbit/s", directBps/1e9),
			fmt.Sprintf("%.2f Gbit/s", plainBps/1e9), pct(plainBps / directBps),
			fmt.Sprintf("ceiling for two relays on this box; %.2f CPU-s/GB", plainCPU/(float64(plainBytes)/1e9))},
	}, nil
}

func rate(ctx context.Context, directURL, pairURL, naiveURL string) ([]result, error) {
	dRate, _, _, err := wrk(ctx, directURL, *wrkConns, *dur)
	if err != nil {
		return nil, err
	}
	pRate, _, _, err := wrk(ctx, pairURL, *wrkConns, *dur)
	if err != nil {
		return nil, err
	}
	nRate, _, _, err := wrk(ctx, naiveURL, *wrkConns, *dur)
	if err != nil {
		return nil, err
	}
	return []result{
		{fmt.Sprintf("Keep-alive requests/s (wrk -c%d)", *wrkConns),
			fmt.Sprintf("%.0f", dRate), fmt.Sprintf("%.0f", pRate), pct(pRate / dRate), "target ≥ 30%"},
		{"Reference: naive go-spiffe + io.Copy pair, keep-alive requests/s",
			fmt.Sprintf("%.0f", dRate), fmt.Sprintf("%.0f", nRate), pct(nRate / dRate), ""},
	}, nil
}

func latency(ctx context.Context, directURL, pairURL string) ([]result, error) {
	d := *dur * 3 / 5
	_, d50, d99, err := wrk(ctx, directURL, 1, d)
	if err != nil {
		return nil, err
	}
	_, p50, p99, err := wrk(ctx, pairURL, 1, d)
	if err != nil {
		return nil, err
	}
	return []result{
		{"Latency p50 (wrk -c1)", fmtDur(d50), fmtDur(p50),
			fmt.Sprintf("+%s/hop", fmtDur((p50-d50)/2)), "target < 100µs added per hop (2 hops)"},
		{"Latency p99 (wrk -c1)", fmtDur(d99), fmtDur(p99), fmt.Sprintf("+%s/hop", fmtDur((p99-d99)/2)), ""},
	}, nil
}

func conns(ctx context.Context, echoAddr string, addrs map[string]string, pid int) ([]result, error) {
	direct, err := connRate(ctx, echoAddr, *workers, *dur*3/5)
	if err != nil {
		return nil, err
	}
	row := func(name, addr, note string, cpuNote bool) (result, error) {
		cpu0 := cpuSeconds(pid)
		start := time.Now()
		r, err := connRate(ctx, addr, *workers, *dur)
		if err != nil {
			return result{}, err
		}
		if cpuNote {
			perConn := (cpuSeconds(pid) - cpu0) / (r * time.Since(start).Seconds())
			note += fmt.Sprintf("; %.0f µs proxy CPU per connection", perConn*1e6)
		}
		return result{name, fmt.Sprintf("%.0f (plaintext)", direct), fmt.Sprintf("%.0f", r), pct(r / direct), note}, nil
	}
	var rows []result
	for _, v := range []struct{ name, addr, note string }{
		{"New connections/s through the pair, TLS 1.3 resumption (default)", addrs["echo"], "target ≥ 1,500/s"},
		{"New connections/s through the pair, full handshakes", addrs["echo-noresume"], "WithSessionResumption(false)"},
		{"New connections/s through the pair, resumption + X25519 only", addrs["echo-x25519"], "WithCurvePreferences(tls.X25519): no post-quantum hybrid"},
	} {
		r, err := row(v.name, v.addr, v.note, true)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r)
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

// iperf runs one client for *dur and returns received bits/s and bytes.
func iperf(ctx context.Context, port int) (float64, int64, error) {
	secs := strconv.Itoa(int(dur.Seconds()))
	cmd := exec.CommandContext(ctx, "iperf3", "-c", "127.0.0.1", "-p", strconv.Itoa(port), "-t", secs, "-J")
	outb, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("iperf3 -c port %d: %w: %s", port, err, outb)
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
		return 0, 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if r.Error != "" {
		return 0, 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	return r.End.SumReceived.BitsPerSecond, r.End.SumReceived.Bytes, nil
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

// cpuSeconds is the user+system CPU time of pid, from /proc/<pid>/stat.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(err)
	// Fields after the parenthesised command name; utime and stime are fields 14 and 15.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	const clkTck = 100 // USER_HZ on Linux
	return (utime + stime) / clkTck
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
