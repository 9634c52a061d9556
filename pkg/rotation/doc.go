// Package rotation keeps identity files on disk in step with the SPIFFE
// Workload API and tells services to pick them up.
//
// A Manager takes a Source (a *svid.Source, or any implementation, e.g. a
// fake in a test) and a list of Outputs. Each Output is one
// directory for one service: which X.509-SVID to use (svid.Selector), which
// files to write (certificate chain, PKCS#8 key, CA bundle, JWT-SVID
// tokens, JWKS), with which modes and owner, and which Reloaders to run
// once they changed (signal, exec, systemctl, launchctl, or your own).
//
// What Start does, per output, until Close:
//
//   - On every push from the Workload API (the first push of a burst at
//     once, the ones following it within the debounce, 100ms by default,
//     coalesced into one trailing write) it picks the SVID,
//     validates it against the bundles, encodes the files and writes them
//     as one set with atomicdir.Writer (versioned directory plus symlink
//     swap), so a reader never sees a new certificate with an old key.
//     Material that fails validation is never written; the last good files
//     stay and the error shows in State.
//
//   - Reloads run in order only when the atomicdir.Writer reports a change. A
//     failed write or reload is retried with exponential backoff (1s..1m)
//     until it succeeds or newer material supersedes it; a retry resumes
//     at the reload that failed. Each reload is told what was written
//     (Written: the dir, each file's path by its name, the SVID), so a
//     reloader that hands paths to its service joins nothing itself.
//
//   - JWT-SVIDs are not pushed: each token file is refreshed at half the
//     token's lifetime (one timer per token) and on every X.509 push.
//
//   - A fsnotify guard restores the set when something else deletes,
//     replaces, edits or chmods a file or the ..data link. The agent's own
//     writes pass atomicdir.Writer.Check and never trigger a rewrite. What stands
//     in the way is moved aside (atomicdir.Writer.Restore: never through a
//     symlink, never changing what is not the writer's), into a quarantine
//     bounded to atomicdir.QuarantineKeep entries of at most
//     atomicdir.QuarantineMaxAge.
//
//   - An expiry watchdog fires when the SVID on disk becomes overdue for
//     rotation (ExpiryOf: less than a third of its lifetime left by
//     default, or a fixed WithExpiryWindow) and logs once per change of
//     state while the Workload API is unreachable. State grades every SVID
//     with the same rule (OutputState.Expiry, SVIDState.Expiry).
//
//   - Beyond the PEM trio, an Output can write a CombinedFile (key and
//     chain in one PEM: tear-free for readers on their own schedule), the
//     SPIFFE Filesystem Delivery Layout (a draft standard), a BundleDir
//     with one bundle per trust domain, and PKCS12 keystore/truststore
//     files; all go through the same validation, modes and set swap.
//
//   - With Verify (a ServedChecker such as *tlsprobe.Prober), each reload
//     is followed by a check that the service serves the certificate just
//     written; until it does, the reloads are retried with backoff and
//     State carries the reason (OutputState.Verify, LastReloadError).
//
// WriteAll is the one-shot pass behind `identity-agent fetch`. Snapshot
// returns a JSON-tagged State for `identity-agent status`. Metrics are
// registered only on the prometheus.Registerer given with WithRegisterer.
//
// The package targets Linux and macOS (signals and process groups).
package rotation
