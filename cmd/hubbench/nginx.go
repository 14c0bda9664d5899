package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// NginxFig: three nodes on one Redis behind real nginx with the project's
// own configuration (charts/nginx/hubnode.conf: client-address affinity).
type NginxFig struct {
	Nodes        int           `json:"nodes"`
	N            int           `json:"n"`
	SrcIPs       int           `json:"srcIps"`
	PerNode      []int         `json:"socketsPerNode"`
	Connect      ConnectResult `json:"connect"`
	RSSPerConnKB float64       `json:"rssPerConnKB"` // the three nodes' RSS summed
	Ramp         []StepResult  `json:"ramp"`
	Max          *StepResult   `json:"max,omitempty"`
}

// startNginx runs nginx in the foreground in a fresh folder, with conf (the
// project's server block) and the two includes it expects, proxying to the
// given loopback ports; it returns the nginx child and its port.
func startNginx(bin, conf string, ports []int, conns int) (*child, int, error) {
	dir, err := os.MkdirTemp("", "hubbench-nginx-")
	if err != nil {
		return nil, 0, err
	}
	body, err := os.ReadFile(conf)
	if err != nil {
		return nil, 0, fmt.Errorf("nginx conf: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	var servers strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&servers, "server 127.0.0.1:%d;\n", p)
	}
	main := strings.Join([]string{
		"daemon off;",
		"worker_processes 1;",
		fmt.Sprintf("worker_rlimit_nofile %d;", 2*conns+1024),
		"pid " + dir + "/nginx.pid;",
		"error_log " + dir + "/error.log warn;",
		fmt.Sprintf("events { worker_connections %d; }", 2*conns+512),
		"http {",
		"  access_log off;",
		"  client_body_temp_path " + dir + "/cbt;",
		"  proxy_temp_path " + dir + "/pt;",
		"  fastcgi_temp_path " + dir + "/ft;",
		"  uwsgi_temp_path " + dir + "/ut;",
		"  scgi_temp_path " + dir + "/st;",
		"  include hubnode.conf;",
		"}",
		"",
	}, "\n")
	for name, content := range map[string]string{
		"hubnode.conf":        string(body),
		"hubnode-servers.inc": servers.String(),
		"hubnode-listen.inc":  fmt.Sprintf("listen 127.0.0.1:%d;\n", port),
		"nginx.conf":          main,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, 0, err
		}
	}
	c, err := start("nginx", dir, nil, bin, "-p", dir, "-c", dir+"/nginx.conf", "-e", dir+"/error.log")
	if err != nil {
		return nil, 0, err
	}
	if err := waitHTTP(c, fmt.Sprintf("http://127.0.0.1:%d/health/live", port), 10*time.Second); err != nil {
		c.stop()
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return nil, 0, fmt.Errorf("%w; nginx error.log: %s", err, b)
	}
	return c, port, nil
}

// behindNginx (f): three nodes behind nginx; o.nginxN sockets through it
// from o.nginxSrcIPs loopback addresses (nginx hashes the client address);
// connect rate, RSS per connection over the three nodes, and the delivery
// ramp via Redis.
func behindNginx(ctx context.Context, sys system, o compareOpts, redisURL string, redisPid int) (*NginxFig, error) {
	ports, pids, stop, err := startNodes(sys, "g", 3, redisURL)
	defer stop()
	if err != nil {
		return nil, err
	}
	ngx, port, err := startNginx(o.nginxBin, o.nginxConf, ports, o.nginxN)
	if err != nil {
		return nil, err
	}
	defer ngx.stop()
	sleepCtx(ctx, 2*time.Second)
	rss := func() (kb int64) {
		for _, p := range pids {
			kb += rssKB(p)
		}
		return kb
	}
	before := rss()
	var socks0 []int
	for _, p := range pids {
		socks0 = append(socks0, establishedTo(p))
	}
	fig := &NginxFig{Nodes: 3, N: o.nginxN, SrcIPs: o.nginxSrcIPs}
	pool := NewPool(PoolConfig{Targets: []string{fmt.Sprintf("ws://127.0.0.1:%d", port)}, N: o.nginxN, Secret: benchSecret,
		ConnectConc: o.conc, SrcIPs: o.nginxSrcIPs}, time.Now())
	defer pool.Close()
	o.log("%s behind nginx: connecting %d sockets from %d addresses …", sys.name, o.nginxN, o.nginxSrcIPs)
	fig.Connect = pool.Connect(ctx)
	sleepCtx(ctx, o.idle)
	if fig.Connect.OK > 0 {
		fig.RSSPerConnKB = float64(rss()-before) / float64(fig.Connect.OK)
	}
	for i, p := range pids {
		fig.PerNode = append(fig.PerNode, establishedTo(p)-socks0[i])
	}
	o.log("%s behind nginx: %d ok, %.0f/s, sockets per node %v, %.2f KB/conn", sys.name, fig.Connect.OK, fig.Connect.PerSecond, fig.PerNode, fig.RSSPerConnKB)
	em, err := newRedisEmitter(redisURL, o.workers)
	if err != nil {
		return fig, err
	}
	defer em.Close()
	fig.Ramp, fig.Max = pool.Ramp(ctx, em, o.stepCfg(pids, redisPid), o.startRate, o.factor, o.maxSteps, o.confirm, o.p99,
		func(r StepResult) { o.log("%s", stepLine(r)) })
	return fig, nil
}

// establishedTo counts the open sockets of process pid, from /proc/<pid>/fd.
func establishedTo(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}
