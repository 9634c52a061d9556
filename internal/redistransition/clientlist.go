package redistransition

import (
	"net"
	"strings"
)

// parseClientLine parses one CLIENT LIST / CLIENT INFO line
// ("id=3 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 ... cmd=client|list").
func parseClientLine(line string) map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields(line) {
		k, v, ok := strings.Cut(f, "=")
		if ok {
			m[k] = v
		}
	}
	return m
}

// portOf returns the port of host:port, "" for unix sockets and junk.
func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil || p == "0" {
		return ""
	}
	return p
}

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
	for _, line := range strings.Split(clientList, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := parseClientLine(line)
		if (skipID != "" && f["id"] == skipID) || f["name"] == AdminClientName {
			continue
		}
		p := portOf(f["laddr"])
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
