package clientlist

import (
	"net"
	"strings"
)

// Client is one connection's fields, by name ("id", "addr", "laddr",
// "name", ...).
type Client map[string]string

// ParseLine parses one line ("id=3 addr=127.0.0.1:5000
// laddr=127.0.0.1:6379 ... cmd=client|list"). Fields without "=" are
// skipped.
func ParseLine(line string) Client {
	c := Client{}
	for _, f := range strings.Fields(line) {
		k, v, ok := strings.Cut(f, "=")
		if ok {
			c[k] = v
		}
	}
	return c
}

// Parse parses a whole CLIENT LIST reply, one Client per non-blank line.
func Parse(reply string) []Client {
	var cs []Client
	for _, line := range strings.Split(reply, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			cs = append(cs, ParseLine(line))
		}
	}
	return cs
}

// LocalPort is the server-side port the connection came in on ("" for a
// unix socket).
func (c Client) LocalPort() string { return Port(c["laddr"]) }

// Port returns the port of host:port, "" for unix sockets ("/path:0") and
// junk.
func Port(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil || p == "0" {
		return ""
	}
	return p
}
