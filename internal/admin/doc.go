// Package admin is the agent's local admin endpoint and its client: a
// status report as JSON (/status), Prometheus metrics (/metrics), and the
// health evaluation `identity-agent status` turns into a monitoring-plugin
// exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
//
// Report carries the parts' own typed state (rotation.State,
// []tlsproxy.Stats, the Redis transition's sample) and its JSON is its
// struct tags; Evaluate is the one place that state is graded.
//
// The endpoint listens on a unix socket created with mode 0600 before it
// becomes visible, so only the agent's user (and root) can read it.
package admin
