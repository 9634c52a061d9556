package redistransition

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteStatus prints s for humans (`identity-agent redis transition status`).
func WriteStatus(w io.Writer, s *Status) error {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s: %s\n", s.Phase, s.Description)
	pw := "no"
	if s.Server.PasswordSet {
		pw = "yes"
	}
	fmt.Fprintf(&b, "server: port=%s tls-port=%s tls-auth-clients=%s requirepass=%s", s.Server.Port, s.Server.TLSPort, s.Server.TLSAuthClients, pw)
	if s.Server.ConfigFile != "" {
		fmt.Fprintf(&b, " config=%s", s.Server.ConfigFile)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "connections: plaintext=%d tls=%d other=%d\n", s.Connections.Plaintext, s.Connections.TLS, s.Connections.Other)
	for _, c := range s.Connections.PlaintextClients {
		fmt.Fprintf(&b, "  plaintext client: %s\n", c)
	}
	if !s.Sample.LastSample.IsZero() {
		fmt.Fprintf(&b, "sampler: last %s", s.Sample.LastSample.UTC().Format(time.RFC3339))
		if !s.Sample.PlaintextZeroSince.IsZero() {
			fmt.Fprintf(&b, ", no plaintext since %s", s.Sample.PlaintextZeroSince.UTC().Format(time.RFC3339))
		}
		if !s.Sample.LastPlaintextSeen.IsZero() {
			fmt.Fprintf(&b, ", last plaintext seen %s", s.Sample.LastPlaintextSeen.UTC().Format(time.RFC3339))
		}
		b.WriteString("\n")
	}
	if s.Next == "" {
		b.WriteString("next: none (final phase)\n")
	} else {
		fmt.Fprintf(&b, "next: %s (%s)\n", s.Next, s.Next.Describe())
		for _, g := range s.Gates {
			mark := "FAIL"
			if g.OK {
				mark = "ok"
			}
			fmt.Fprintf(&b, "  [%-4s] %-16s %s\n", mark, g.Name, g.Detail)
		}
	}
	if s.Previous != "" {
		fmt.Fprintf(&b, "rollback: to %s with `rollback --confirm`\n", s.Previous)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
