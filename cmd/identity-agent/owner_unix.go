//go:build unix

package main

import (
	"io/fs"
	"syscall"
)

// owners returns the uids owning a directory and a file.
func owners(dir, file fs.FileInfo) (dirUID, fileUID uint32, ok bool) {
	d, ok1 := dir.Sys().(*syscall.Stat_t)
	f, ok2 := file.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 {
		return 0, 0, false
	}
	return d.Uid, f.Uid, true
}
