// Package fleettest runs the real identity-agent binary and its peers
// (the development Workload API served by `identity-agent dev`,
// redis-server) as separate processes for the fleet-level tests of
// packaging/ansible, packaging/prometheus and examples/redis.
//
// These tests drive only the command line, like an operator or Ansible
// does, so they keep working whatever the packages behind it become.
package fleettest
