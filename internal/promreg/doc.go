// Package promreg registers Prometheus collectors that several values of
// one kind share (every Redis client, every Redis reloader of a process
// on one registry), without a global registry.
package promreg
