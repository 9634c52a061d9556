// Package devapitest starts the embedded development Workload API
// (internal/devapi) for tests.
//
// It exists because the tests of several packages each carried the same
// fixture: a short temporary directory for the unix socket, then
// devapi.New, Start on a socket in that directory and Stop on cleanup. The
// directory must be short because a unix socket path is limited to about
// 108 bytes (104 on macOS), and t.TempDir() embeds the test's name, which
// for a long subtest name leaves no room for the socket file.
//
// Every server it creates is stopped, and every directory removed, when the
// test ends. It keeps no state of its own.
package devapitest
