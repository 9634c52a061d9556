// Package agent wires identity-agent's parts from one configuration: the
// Workload API source, the rotation manager with its outputs and reloads,
// the mTLS proxies, and the admin endpoint. It holds no logic a package
// test could cover; it only builds, starts and stops.
package agent
