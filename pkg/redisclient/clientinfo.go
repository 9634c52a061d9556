package redisclient

import (
	"net"
	"strings"
)

// parseClientLine parses one CLIENT INFO / CLIENT LIST line
// ("id=3 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 ... cmd=client|info").
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
