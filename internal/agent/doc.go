// Package agent wires identity-agent's parts from one configuration. A
// configuration becomes a Plan (NewPlan: every part that is a value,
// checked, reloaders built; no side effects), New starts nothing but
// builds the running parts from a plan (the Workload API source's
// consumers: the rotation manager with its outputs and reloads, the mTLS
// proxies, the admin endpoint), Run runs them, and a reload Applies the
// next plan as a diff against the running one. It holds no logic a
// package test could cover; it only plans, builds, starts and stops.
package agent
