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
// metrics_listen is reachable by every local user. Each listener holds a
// bounded number of connections (MaxSocketConns, MaxMetricsConns) under
// read, write and idle timeouts, so that FDs can be counted against the
// agent's file descriptors; see capListener for who gives way at the cap.
//
// The client, Fetch, trusts only a socket served by root or its own uid
// and reads at most MaxStatusBytes, within its context's deadline.
package admin
