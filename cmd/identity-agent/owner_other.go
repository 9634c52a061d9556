//go:build !unix

package main

import "io/fs"

// owners cannot tell owners here: records are not trusted.
func owners(_, _ fs.FileInfo) (dirUID, fileUID uint32, ok bool) { return 0, 0, false }
