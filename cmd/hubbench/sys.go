package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// signHS256 makes the HS256 JWT {sub, email, iat, exp} both servers accept.
func signHS256(secret, sub string, exp int64) string {
	enc := base64.RawURLEncoding
	claims, _ := json.Marshal(map[string]any{"sub": sub, "email": sub + "@bench.invalid", "exp": exp, "iat": exp - 86400})
	msg := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(mac.Sum(nil))
}

// loopbackURL normalises a target to ws://host:port and refuses anything
// that is not a loopback address.
func loopbackURL(s string) (ws, httpBase string, err error) {
	if !strings.Contains(s, "://") {
		s = "ws://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", "", err
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", "", fmt.Errorf("target %q is not a loopback address: hubbench only loads this machine", s)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	hp := net.JoinHostPort(host, u.Port())
	if u.Port() == "" {
		return "", "", fmt.Errorf("target %q has no port", s)
	}
	return "ws://" + hp, "http://" + hp, nil
}

// raiseNofile lifts RLIMIT_NOFILE: as root the hard limit too (up to
// fs.nr_open), else the soft limit to the hard one. Children inherit it.
func raiseNofile(want uint64) uint64 {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 0
	}
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && want > n {
			want = n
		}
	}
	if want > l.Max {
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}) == nil {
			return want
		}
	}
	l.Cur = l.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	return l.Cur
}

// rssKB reads VmRSS of pid (kB); 0 when unknown.
func rssKB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// cpuTicks reads utime+stime of pid in clock ticks (USER_HZ = 100 on Linux).
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

const userHZ = 100

func sumRSS(pids []int) (kb int64) {
	for _, p := range pids {
		kb += rssKB(p)
	}
	return kb
}

func sumTicks(pids []int) (t int64) {
	for _, p := range pids {
		t += cpuTicks(p)
	}
	return t
}

// memAvailableKB reads MemAvailable from /proc/meminfo.
func memAvailableKB() int64 {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// Hist is a log-linear histogram of nanoseconds (64 sub-buckets per power
// of two: under 1.6 % error), safe for concurrent Record.
type Hist struct {
	b [128 + 64*58]atomic.Int64
	n atomic.Int64
}

func NewHist() *Hist { return &Hist{} }

func bucket(v int64) int {
	if v < 128 {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v))
	shift := e - 7
	i := 128 + (shift-1)*64 + int(uint64(v)>>shift) - 64
	return min(i, 128+64*58-1)
}

func bucketValue(i int) int64 {
	if i < 128 {
		return int64(i)
	}
	shift := (i-128)/64 + 1
	m := int64((i-128)%64 + 64)
	return m<<shift + (int64(1)<<shift)/2
}

func (h *Hist) Record(v int64) {
	h.b[bucket(v)].Add(1)
	h.n.Add(1)
}

// Quantile holds latencies in milliseconds.
type Quantile struct {
	N    int64   `json:"n"`
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

func (h *Hist) Quantiles() Quantile {
	n := h.n.Load()
	q := Quantile{N: n}
	if n == 0 {
		return q
	}
	targets := []float64{0.5, 0.99, 0.999}
	out := []*float64{&q.P50, &q.P99, &q.P999}
	var cum int64
	k := 0
	for i := range h.b {
		c := h.b[i].Load()
		if c == 0 {
			continue
		}
		cum += c
		for k < len(targets) && float64(cum) >= math.Ceil(targets[k]*float64(n)) {
			*out[k] = float64(bucketValue(i)) / 1e6
			k++
		}
		q.Max = float64(bucketValue(i)) / 1e6
	}
	return q
}

// machineTicks is the busy time of all CPUs (user+nice+system+irq+softirq+steal) from /proc/stat.
func machineTicks() int64 {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var t int64
	for i, v := range f {
		if i == 0 || i == 4 || i == 5 { // "cpu", idle, iowait
			continue
		}
		if i > 8 { // guest time is already in user
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		t += n
	}
	return t
}

// reniceSelf sets the nice value of every thread of this process; threads
// and children created afterwards inherit it. Only processes hubbench
// starts are affected.
func reniceSelf(nice int) error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil {
			return err
		}
	}
	return nil
}
