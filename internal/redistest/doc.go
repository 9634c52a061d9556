// Package redistest runs a real redis-server for tests, with TLS files
// from an in-process Workload API (svidtest): the environment the Redis
// client (pkg/redisclient) and the server-side transition
// (internal/redistransition) are both tested against. It is for tests
// only; nothing in the binary imports it.
package redistest
