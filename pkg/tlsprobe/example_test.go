package tlsprobe_test

import (
	"context"
	"fmt"

	"github.com/identity-agent/identity-agent/pkg/tlsprobe"
)

// After a reload, ask the service which certificate it now serves and
// compare it with the one just written.
func ExampleProber_Served() {
	p, err := tlsprobe.New("tcp://127.0.0.1:6380", tlsprobe.WithServerName("redis.internal"))
	if err != nil {
		fmt.Println(err)
		return
	}
	leaf, err := p.Served(context.Background(), nil)
	if err != nil {
		fmt.Println("not serving TLS yet:", err != nil)
		return
	}
	fmt.Println("serial", leaf.SerialNumber)
}
