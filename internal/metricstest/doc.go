// Package metricstest reads one series from a Prometheus registry in
// tests. Labels match exactly: a series is named by all of its labels, so
// an assertion can never pass on a neighbouring series that merely shares
// some of them.
package metricstest
