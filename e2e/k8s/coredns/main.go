// A minimal CoreDNS for the e2e cluster: coremain with only the plugins a cluster
// DNS needs. CoreDNS's own coredns.go imports core/plugin, which links all ~60
// plugins and their cloud SDKs (route53, azure, clouddns, etcd, ...); here the
// directive list (core/dnsserver.Directives) stays complete and only the plugins
// imported below register, so a Corefile naming any other plugin fails to load.
//
// The set covers the Corefile kubeadm writes (errors, health, ready, kubernetes,
// prometheus, forward, cache, loop, reload, loadbalance) plus log, hosts and
// whoami. `coredns -plugins` lists them and four more that these import and so
// register too: debug and dnstap (forward), metadata, transfer (kubernetes).
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami"
)

func main() {
	coremain.Run()
}
