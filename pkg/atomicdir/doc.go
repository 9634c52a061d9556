// Package atomicdir writes sets of files that must change together, the way
// Kubernetes' AtomicWriter does, and is safe to run as root in a directory a
// local attacker can see.
//
// WriteFile replaces one file atomically. Writer writes a set of
// files that must change together (certificate, key, bundle; names may be
// one directory deep, "bundles/example.org.pem") with the
// Kubernetes AtomicWriter layout: a hidden versioned directory per set, a
// "..data" symlink swapped with one rename, and stable names that are
// symlinks through "..data". Files never exist with wider permissions than
// asked, a failed write leaves the previous set untouched, and writing an
// identical set is a no-op. Readers that need a matching certificate and
// key should resolve "..data" once and read both files below it.
//
// The writer only works inside a directory of its own user (MakeDir makes
// one; CheckDir refuses a symlink or someone else's), and only
// through the opened directory (dirfd_unix.go): *at calls, O_NOFOLLOW,
// fchmod and fchown on descriptors, so a symlink swapped in by someone who
// can write there is never followed. Restore moves what stands in the way
// aside to ".quarantine-NAME-TIME" (bounded: QuarantineKeep entries, none
// older than QuarantineMaxAge).
package atomicdir
