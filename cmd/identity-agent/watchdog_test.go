package main

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestFeedWatchdogStopsOnAStalledLoop: WATCHDOG=1 goes out every interval
// while no rotation loop is stalled, and stops as soon as one is, so
// systemd restarts the agent after WatchdogSec=; it resumes if the loop
// moves on before that.
func TestFeedWatchdogStopsOnAStalledLoop(t *testing.T) {
	var (
		pings   atomic.Int64
		mu      sync.Mutex
		stalled []string
	)
	ping := func() (bool, error) { pings.Add(1); return true, nil }
	stalledFn := func() []string { mu.Lock(); defer mu.Unlock(); return stalled }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); feedWatchdog(ctx, 5*time.Millisecond, stalledFn, ping, zap.NewNop()) }()
	defer func() { cancel(); <-done }()

	require.Eventually(t, func() bool { return pings.Load() >= 3 }, 10*time.Second, time.Millisecond)
	mu.Lock()
	stalled = []string{"api"}
	mu.Unlock()
	// One ping may have been on its way when the stall began.
	time.Sleep(50 * time.Millisecond)
	n := pings.Load()
	time.Sleep(200 * time.Millisecond)
	require.Equal(t, n, pings.Load(), "pings went on while a loop was stalled")

	mu.Lock()
	stalled = nil
	mu.Unlock()
	require.Eventually(t, func() bool { return pings.Load() > n }, 10*time.Second, time.Millisecond)
}

func TestFeedWatchdogOffWithoutInterval(t *testing.T) {
	called := false
	feedWatchdog(context.Background(), 0, func() []string { return nil }, func() (bool, error) { called = true; return true, nil }, zap.NewNop())
	require.False(t, called)
}
