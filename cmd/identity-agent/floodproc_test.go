package main_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/identity-agent/identity-agent/internal/fleettest"
)

// floodHelperEnv makes the test binary an attacker process (see
// runFloodHelper) instead of running tests.
const floodHelperEnv = "IDENTITY_AGENT_TEST_FLOOD"

// runFloodHelper runs one fleettest.IdleFlood of n connections per target
// (spec: "n network:address ..."), prints the floods' dial counts every
// 50ms and stops when stdin closes. The attacker lives in its own process
// so that its thousands of reconnecting goroutines compete with the
// authorized client for CPU as another local user's would, not inside the
// client's own Go scheduler, where they delayed the client's goroutines
// for as long as the flood was fast.
func runFloodHelper(spec string) int {
	f := strings.Fields(spec)
	n, err := strconv.Atoi(f[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "flood helper:", err)
		return 2
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	var floods []*fleettest.IdleFlood
	for _, target := range f[1:] {
		network, addr, _ := strings.Cut(target, ":")
		floods = append(floods, fleettest.StartIdleFlood(n, func() (net.Conn, error) { return d.Dial(network, addr) }))
	}
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			for _, fl := range floods {
				fl.Stop()
			}
			return 0
		case <-tick.C:
			var b strings.Builder
			for i, fl := range floods {
				if i > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(strconv.FormatInt(fl.Dials(), 10))
			}
			fmt.Println(b.String())
		}
	}
}

// floodProc is a running attacker process.
type floodProc struct {
	cmd   *exec.Cmd
	stdin io.Closer
	mu    sync.Mutex
	dials []int64
	done  chan struct{}
}

// startFloodProcess starts this test binary as an attacker holding n idle
// connections to each target ("network:address"), each replaced at once
// when closed.
func startFloodProcess(t *testing.T, n int, targets ...string) *floodProc {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), floodHelperEnv+"="+strconv.Itoa(n)+" "+strings.Join(targets, " "))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &floodProc{cmd: cmd, stdin: stdin, dials: make([]int64, len(targets)), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != len(targets) {
				continue
			}
			p.mu.Lock()
			for i, s := range f {
				p.dials[i], _ = strconv.ParseInt(s, 10, 64)
			}
			p.mu.Unlock()
		}
	}()
	t.Cleanup(p.Stop)
	return p
}

// Dials is how many connections each flood opened, in target order.
func (p *floodProc) Dials() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int64(nil), p.dials...)
}

// Stop closes the attacker's connections and waits for it to exit.
func (p *floodProc) Stop() {
	if p.stdin == nil {
		return
	}
	_ = p.stdin.Close()
	p.stdin = nil
	<-p.done
	_ = p.cmd.Wait()
}
