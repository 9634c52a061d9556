package rotation

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// BenchmarkPushToDisk measures the time from srv.RotateSVIDs() (a Workload
// API push) until the output's cert, key and bundle are on disk (the
// Writer.Write returned changed=true with the new serial), and reports the
// p50/p99 over b.N rotations. Rotations are spaced by more than the
// debounce, as in production where they are minutes apart.
func BenchmarkPushToDisk(b *testing.B) {
	for _, bc := range []struct {
		name     string
		debounce time.Duration
	}{{"debounce=0", 0}, {"debounce=100ms", DefaultDebounce}} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnv(b, svidtest.Config{}, true)
			w := newWrites()
			m := newTestManager(b, e, []Output{{Name: "web", Dir: filepath.Join(b.TempDir(), "out"),
				CertFile: "cert.pem", KeyFile: "key.pem", BundleFile: "ca.pem"}},
				WithDebounce(bc.debounce), WithGuard(true), withWriteHook(w.hook))
			runManager(b, m)
			waitSerial(b, filepath.Join(m.outs[0].out.Dir, "cert.pem"), currentSerial(e, ""))

			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if err := e.srv.RotateSVIDs(); err != nil {
					b.Fatal(err)
				}
				want := serialString(currentSerial(e, ""))
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			wait:
				for {
					select {
					case ev := <-w.ch:
						if ev.Changed && ev.Err == nil && ev.Serial == want {
							lat = append(lat, ev.At.Sub(start))
							break wait
						}
					case <-ctx.Done():
						cancel()
						b.Fatalf("rotation %d: serial %s never written", i, want)
					}
				}
				cancel()
				// Real rotations are minutes apart; leave the quiet period
				// of the previous write before pushing again, or every push
				// would measure the trailing coalesced write instead.
				time.Sleep(bc.debounce + 10*time.Millisecond)
			}
			b.StopTimer()
			slices.Sort(lat)
			pct := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
			}
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(0, "ns/op") // the mean of a latency with sleeps in it says little
		})
	}
}
