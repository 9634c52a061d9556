package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// Fetch reads /status from an agent. addr is a unix socket path, or an
// http:// URL of a loopback listener.
func Fetch(ctx context.Context, addr string) (Report, error) {
	var r Report
	client := &http.Client{}
	url := strings.TrimSuffix(addr, "/") + "/status"
	if !strings.HasPrefix(addr, "http://") {
		sock := strings.TrimPrefix(addr, "unix://")
		client.Transport = &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		}
		url = "http://agent/status"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return r, fmt.Errorf("admin %s: %w", addr, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return r, fmt.Errorf("agent not reachable at %s: %w", addr, unwrapURLError(err))
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return r, fmt.Errorf("agent at %s answered %s: %s", addr, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("agent at %s: bad status document: %w", addr, err)
	}
	return r, nil
}

func unwrapURLError(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		inner := u.Unwrap()
		if inner == nil {
			return err
		}
		if _, isOp := inner.(*net.OpError); isOp {
			return inner
		}
		err = inner
	}
}
