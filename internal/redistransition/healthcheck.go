package redistransition

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"time"

	"github.com/identity-agent/identity-agent/pkg/redisclient"
)

// HealthCheck is one check the transition gates on ("all configured
// health checks pass"), e.g. an application's own readiness endpoint.
type HealthCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// HTTPHealthCheck passes when GET url answers 2xx within timeout.
func HTTPHealthCheck(name, url string, timeout time.Duration) HealthCheck {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return HealthCheck{Name: name, Check: func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}}
}

// CommandHealthCheck passes when argv exits 0 within timeout (no shell).
func CommandHealthCheck(name string, argv []string, timeout time.Duration) HealthCheck {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return HealthCheck{Name: name, Check: func(ctx context.Context) error {
		if len(argv) == 0 {
			return fmt.Errorf("empty command")
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			msg := strings.TrimSpace(string(out))
			if len(msg) > 200 {
				msg = msg[:200] + "…"
			}
			return fmt.Errorf("%s: %w: %s", argv[0], err, msg)
		}
		return nil
	}}
}

// ClientHealthCheck passes when c answers and its connection took path
// want (e.g. PathTLS to prove an in-process client is on mTLS).
func ClientHealthCheck(name string, c *redisclient.Client, want redisclient.Path) HealthCheck {
	return HealthCheck{Name: name, Check: func(ctx context.Context) error {
		r, err := c.Health(ctx)
		if err != nil {
			return err
		}
		if r.Path != want {
			return fmt.Errorf("client on path %s, want %s", r.Path, want)
		}
		return nil
	}}
}
