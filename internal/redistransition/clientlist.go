package redistransition

import (
	"strings"

	"github.com/identity-agent/identity-agent/internal/clientlist"
)

// ConnCounts is CLIENT LIST split by the server-side (laddr) port.
type ConnCounts struct {
	Plaintext int `json:"plaintext"`
	TLS       int `json:"tls"`
	// Other counts unix-socket and unknown-port connections.
	Other int `json:"other"`
	// PlaintextClients lists "addr name" of plaintext connections so the
	// operator can find who still uses the password port.
	PlaintextClients []string `json:"plaintext_clients,omitempty"`
}

// AdminClientName is the CLIENT SETNAME of the agent's admin connections;
// CountClients leaves them out (they are not workloads), so an admin
// connection on the plaintext port cannot hold the transition back.
const AdminClientName = "identity-agent-admin"

// CountClients splits CLIENT LIST output by laddr port. skipID is the
// caller's own CLIENT ID; connections named AdminClientName are skipped too.
func CountClients(clientList, plainPort, tlsPort, skipID string) ConnCounts {
	var c ConnCounts
	for _, f := range clientlist.Parse(clientList) {
		if (skipID != "" && f["id"] == skipID) || f["name"] == AdminClientName {
			continue
		}
		p := f.LocalPort()
		switch {
		case p != "" && p == plainPort:
			c.Plaintext++
			c.PlaintextClients = append(c.PlaintextClients, strings.TrimSpace(f["addr"]+" "+f["name"]))
		case p != "" && p == tlsPort:
			c.TLS++
		default:
			c.Other++
		}
	}
	return c
}
