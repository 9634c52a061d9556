package atomicdir_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
)

// A Writer swaps a whole set of files at once; services read the stable
// names, which are symlinks through "..data". Writing the same set again
// changes nothing, so no reload is triggered.
func ExampleWriter() {
	base, _ := os.MkdirTemp("", "example")
	defer func() { _ = os.RemoveAll(base) }()
	w, _ := atomicdir.NewWriter(filepath.Join(base, "redis"))

	files := []atomicdir.File{
		{Name: "cert.pem", Data: []byte("-----BEGIN CERTIFICATE-----\n..."), Mode: 0o644},
		{Name: "key.pem", Data: []byte("-----BEGIN PRIVATE KEY-----\n..."), Mode: 0o600},
	}
	changed, err := w.Write(files)
	fmt.Println("first write changed:", changed, err)
	changed, err = w.Write(files)
	fmt.Println("same set again changed:", changed, err)

	link, _ := os.Readlink(filepath.Join(w.Dir(), "key.pem"))
	fi, _ := os.Stat(filepath.Join(w.Dir(), "key.pem"))
	fmt.Println("key.pem ->", link, fi.Mode().Perm())
	ok, _ := w.Check(files)
	fmt.Println("on disk as expected:", ok)
	// Output:
	// first write changed: true <nil>
	// same set again changed: false <nil>
	// key.pem -> ..data/key.pem -rw-------
	// on disk as expected: true
}
