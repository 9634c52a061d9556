//go:build !unix

package agent

// rlimitNOFILE reports no limit where there is no RLIMIT_NOFILE.
func rlimitNOFILE() (soft, hard uint64, ok bool) { return 0, 0, false }
