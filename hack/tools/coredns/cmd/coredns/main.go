// Command coredns is the upstream CoreDNS server (coremain.Run, as upstream's own main calls) with
// only the plugins the local cluster's DNS uses, registered in upstream's order (core/dnsserver's
// generated directive list). Upstream documents this way of choosing plugins at compile time; it
// keeps the cloud providers' SDKs and the `forward` plugin out: the cluster's DNS answers for the
// cluster's names and nothing else, so no query ever leaves the machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The subset of upstream's directive list, in upstream's relative order.
var directives = []string{
	"ready",
	"health",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"kubernetes",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
