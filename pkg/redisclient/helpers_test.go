package redisclient

import (
	"os"

	"github.com/identity-agent/identity-agent/internal/redistest"
)

// The shared Redis test environment (internal/redistest) under the names
// these tests use.
var (
	serverID = redistest.ServerID
	clientID = redistest.ClientID
)

const testPassword = redistest.Password

// writeFileRename replaces path atomically (temp file + rename), as the
// agent's writer does, so redis-server never reads half a file.
func writeFileRename(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
