// Package fdflood measures the agent under a file-descriptor flood (issue
// 18): the real binary at RLIMIT_NOFILE 1024, its metrics_listen and admin
// socket held at their connection caps by idle attackers, against the same
// agent unattacked. `make bench` runs BenchmarkFDFlood without the race
// detector (FLEETTEST_RACE=0).
package fdflood
