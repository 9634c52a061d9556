package sdnotify_test

import (
	"fmt"

	"github.com/identity-agent/identity-agent/internal/sdnotify"
)

func Example() {
	n := sdnotify.New()
	// ... first SVIDs written ...
	sent, err := n.Ready("2 outputs written")
	fmt.Println(sent, err) // false <nil> outside systemd
}
