package testutil

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file starts real redis-server processes for tests: a single server
// and a 3-master Redis Cluster, on free loopback ports, stopped in
// t.Cleanup. A missing redis-server or redis-cli fails the test with what
// to install.

// Redis is a redis-server started for one test.
type Redis struct {
	Addr string // 127.0.0.1:port
	Port int
	dir  string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// redisBaseArgs are the settings every test server runs with: no
// persistence, loopback only, and the eviction policy docs/storage.md
// expects of a KV tier.
func redisBaseArgs(dir string, port int) []string {
	return []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no",
		"--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru",
	}
}

// StartRedis starts a redis-server on a free loopback port with extra
// (for example "--maxmemory", "8mb") appended to the test settings, waits
// until it answers PING, and stops it when the test ends.
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	RequireTool(t, "redis-server", "redis-server")
	var lastErr error
	for range 5 {
		port := freePort(t, false)
		dir := t.TempDir()
		r := &Redis{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, dir: dir,
			args: append(redisBaseArgs(dir, port), extra...)}
		if lastErr = r.start(); lastErr == nil {
			t.Cleanup(r.stop)
			return r
		}
	}
	t.Fatalf("start redis-server: %v", lastErr)
	return nil
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command("redis-server", r.args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	r.cmd, r.out, r.done = cmd, out, done
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited at start:\n%s", r.Port, out.String())
		default:
		}
		if resp, err := redisCommand(r.Addr, "PING"); err == nil && resp == "+PONG" {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-done
	return fmt.Errorf("redis-server on port %d did not answer PING within 10s:\n%s", r.Port, out.String())
}

func (r *Redis) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	select {
	case <-r.done:
	default:
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			r.cmd.Process.Kill()
			<-r.done
		}
	}
	r.cmd = nil
}

// URL is the server's redis:// URL.
func (r *Redis) URL() string { return "redis://" + r.Addr }

// Kill stops the server abruptly (SIGKILL), as a crash would.
func (r *Redis) Kill(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		t.Fatalf("redis-server on port %d is not running", r.Port)
	}
	r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// Restart starts a killed or stopped server again on the same port (empty:
// nothing is persisted).
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	if err := r.start(); err != nil {
		t.Fatalf("restart redis-server: %v", err)
	}
}

// Do sends one command (arguments without spaces) and returns the first
// line of the reply, failing t on a connection error.
func (r *Redis) Do(t testing.TB, args ...string) string {
	t.Helper()
	resp, err := redisCommand(r.Addr, args...)
	if err != nil {
		t.Fatalf("redis %s: %v", strings.Join(args, " "), err)
	}
	return resp
}

// redisCommand sends one RESP command and returns the reply's first line.
func redisCommand(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// freePort returns a loopback TCP port that was free a moment ago; with
// bus, port+10000 (Redis Cluster's bus port) was free too.
func freePort(t testing.TB, bus bool) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !bus {
			return port
		}
		if port+10000 > 65535 {
			continue
		}
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		if err != nil {
			continue
		}
		l2.Close()
		return port
	}
	t.Fatalf("no free port pair (port, port+10000) for a Redis Cluster node")
	return 0
}

// RedisCluster is a 3-master Redis Cluster started for one test.
type RedisCluster struct {
	Nodes []*Redis
}

// StartRedisCluster starts three redis-server nodes in cluster mode, joins
// them with `redis-cli --cluster create` (no replicas), waits until every
// node reports cluster_state:ok, and stops them when the test ends.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	RequireTool(t, "redis-server", "redis-server")
	cli := RequireTool(t, "redis-cli", "redis-tools")
	c := &RedisCluster{}
	for range 3 {
		var node *Redis
		var lastErr error
		for range 5 {
			port := freePort(t, true)
			dir := t.TempDir()
			node = &Redis{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, dir: dir,
				args: append(redisBaseArgs(dir, port), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")}
			if lastErr = node.start(); lastErr == nil {
				break
			}
			node = nil
		}
		if node == nil {
			t.Fatalf("start redis cluster node: %v", lastErr)
		}
		t.Cleanup(node.stop)
		c.Nodes = append(c.Nodes, node)
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.Nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range c.Nodes {
		for {
			out, err := exec.Command(cli, "-p", strconv.Itoa(n.Port), "cluster", "info").Output()
			if err == nil && strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redis cluster node %s not ok after 20s: %s", n.Addr, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// URL is the cluster's URL in go-redis ParseClusterURL form:
// redis://first?addr=second&addr=third.
func (c *RedisCluster) URL() string {
	var q []string
	for _, n := range c.Nodes[1:] {
		q = append(q, "addr="+n.Addr)
	}
	return "redis://" + c.Nodes[0].Addr + "?" + strings.Join(q, "&")
}
