// Command etcd is the upstream etcd server: upstream's own main.go is exactly this call. It lives in
// a wrapper module because `go install go.etcd.io/etcd/server/v3@...` fails on etcd's relative
// replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
