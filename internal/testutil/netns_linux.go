//go:build linux

package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

var netnsSeq atomic.Uint64

// Netns is a network namespace created for one test and deleted when it ends.
type Netns struct {
	Name string
	f    *os.File
}

// NewNetns creates a fresh network namespace with `ip netns add`, brings its
// loopback up and deletes it in t.Cleanup, also when the test fails.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	RequireRoot(t, "network namespaces")
	RequireTool(t, "ip", "iproute2")
	name := fmt.Sprintf("kvl%d-%d", os.Getpid(), netnsSeq.Add(1))
	ipCmd(t, "netns", "add", name)
	t.Cleanup(func() {
		if err := runIP("netns", "del", name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	f, err := os.Open("/var/run/netns/" + name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { f.Close() })
	n := &Netns{Name: name, f: f}
	n.IP(t, "link", "set", "lo", "up")
	return n
}

// IP runs `ip -n <ns> args...` and fails t on error.
func (n *Netns) IP(t testing.TB, args ...string) {
	t.Helper()
	ipCmd(t, append([]string{"-n", n.Name}, args...)...)
}

// Do runs fn on a thread that has entered the namespace, then returns the
// thread to the test's namespace. Sockets and BPF links fn creates stay in
// the namespace after it returns; goroutines fn starts do not run in it.
func (n *Netns) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	defer orig.Close()
	if err := unix.Setns(int(n.f.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Stay locked: the runtime retires a thread whose goroutine exits
		// locked, so no other goroutine inherits the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("leave netns %s: %w", n.Name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// VethPair is two namespaces, "router" and "host", joined by a veth pair
// with IPv4 and IPv6 addresses on both ends.
type VethPair struct {
	Router, Host           *Netns
	RouterIf, HostIf       string // interface names inside each namespace
	RouterIndex, HostIndex int
	RouterMAC, HostMAC     net.HardwareAddr
	RouterIP4, HostIP4     netip.Addr
	RouterIP6, HostIP6     netip.Addr
}

// NewVethPair creates the two namespaces and the veth pair between them,
// addresses both ends (10.77.0.1/24 and fd77::1/64 on the router,
// 10.77.0.2/24 and fd77::2/64 on the host, IPv6 without duplicate address
// detection so it is usable at once), brings them up and installs static
// neighbour entries so the first packet needs no ARP or NDP round. All of it
// is removed when t ends.
func NewVethPair(t testing.TB) *VethPair {
	t.Helper()
	p := &VethPair{
		Router: NewNetns(t), Host: NewNetns(t),
		RouterIf: "kvr0", HostIf: "kvh0",
		RouterIP4: netip.MustParseAddr("10.77.0.1"), HostIP4: netip.MustParseAddr("10.77.0.2"),
		RouterIP6: netip.MustParseAddr("fd77::1"), HostIP6: netip.MustParseAddr("fd77::2"),
	}
	p.Router.IP(t, "link", "add", p.RouterIf, "type", "veth", "peer", "name", p.HostIf, "netns", p.Host.Name)
	for _, side := range []struct {
		ns      *Netns
		ifname  string
		ip4     netip.Addr
		ip6     netip.Addr
		mac     *net.HardwareAddr
		ifindex *int
	}{
		{p.Router, p.RouterIf, p.RouterIP4, p.RouterIP6, &p.RouterMAC, &p.RouterIndex},
		{p.Host, p.HostIf, p.HostIP4, p.HostIP6, &p.HostMAC, &p.HostIndex},
	} {
		side.ns.IP(t, "addr", "add", side.ip4.String()+"/24", "dev", side.ifname)
		side.ns.IP(t, "addr", "add", side.ip6.String()+"/64", "dev", side.ifname, "nodad")
		side.ns.IP(t, "link", "set", side.ifname, "up")
		err := side.ns.Do(func() error {
			ifi, err := net.InterfaceByName(side.ifname)
			if err != nil {
				return err
			}
			*side.mac, *side.ifindex = ifi.HardwareAddr, ifi.Index
			return nil
		})
		if err != nil {
			t.Fatalf("look up %s in %s: %v", side.ifname, side.ns.Name, err)
		}
	}
	p.Router.IP(t, "neigh", "replace", p.HostIP4.String(), "lladdr", p.HostMAC.String(), "dev", p.RouterIf, "nud", "permanent")
	p.Router.IP(t, "neigh", "replace", p.HostIP6.String(), "lladdr", p.HostMAC.String(), "dev", p.RouterIf, "nud", "permanent")
	p.Host.IP(t, "neigh", "replace", p.RouterIP4.String(), "lladdr", p.RouterMAC.String(), "dev", p.HostIf, "nud", "permanent")
	p.Host.IP(t, "neigh", "replace", p.RouterIP6.String(), "lladdr", p.RouterMAC.String(), "dev", p.HostIf, "nud", "permanent")
	return p
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if err := runIP(args...); err != nil {
		t.Fatal(err)
	}
}

func runIP(args ...string) error {
	cmd := exec.Command("ip", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
