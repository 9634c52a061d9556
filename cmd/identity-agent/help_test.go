package main_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestProxyHelpShowsRealDefaults: an unset duration flag must not claim a
// "(default 0s)" next to the default the proxy really applies.
func TestProxyHelpShowsRealDefaults(t *testing.T) {
	for _, mode := range []string{"server", "client"} {
		r := runCLI(t, "proxy", mode, "--help")
		assert.Equal(t, 0, r.code)
		assert.NotContains(t, r.stdout, "(default 0s)")
		assert.Contains(t, r.stdout, "TLS handshake limit (default 5s)")
		assert.Contains(t, r.stdout, "target dial limit (default 5s)")
	}
}
