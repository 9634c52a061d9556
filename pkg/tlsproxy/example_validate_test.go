package tlsproxy_test

import (
	"fmt"

	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// Validate checks a Config as New will, opening nothing, and reports every
// problem at once, each naming its field.
func ExampleConfig_Validate() {
	cfg := tlsproxy.Config{Name: "ollama", Mode: tlsproxy.ModeServer, Listen: "0.0.0.0:6701",
		Target: "10.0.0.5:11434", Allow: []string{"spiffe://example.org/traefik", "traefik"}}
	fmt.Println(cfg.Validate())
	// Output:
	// target: "10.0.0.5:11434": plaintext target must be a loopback IP, localhost or a unix socket (set unsafe_allow_non_loopback_plaintext to override)
	// allow[1]: "traefik": want spiffe://trust-domain/path, spiffe://trust-domain/prefix/* or spiffe://trust-domain
}
