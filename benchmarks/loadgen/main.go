// Command loadgen replays AdmissionReview requests against a validating webhook at a fixed rate
// over keep-alive TLS and prints latency figures as JSON; it also serves the smallest possible
// webhook, the floor that the transport and this client alone cost.
//
//	loadgen run -url https://127.0.0.1:8443/managed-child -ca ca.crt -rate 300 -duration 10s \
//	    -review denied.json=denied -review allowed.json=allowed [-watch-pid PID -watch-cpu N]
//	loadgen serve -addr 127.0.0.1:8444 -cert tls.crt -key tls.key
//
// `run` is open loop: request i is due at start + i/rate whatever happened to the requests before
// it, and its latency is counted from that due time to the last byte of the answer. A server (or a
// client) that falls behind therefore shows as latency, not as fewer requests sent
// (coordinated omission). Each review is sent with a fresh request uid; an answer counts as an
// error unless it is HTTP 200, echoes that uid and allows or denies as its review expects.
//
// Standard library only, so that it builds offline.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen run|serve [flags]  (loadgen run -h for the flags)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "serve":
		err = serve(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: run or serve", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------------------------------------
// What is sent
// ---------------------------------------------------------------------------------------------

// review is one AdmissionReview body, split around its request uid so that every request can
// carry a fresh one, and the answer it must get.
type review struct {
	name           string
	prefix, suffix []byte
	allowed        bool
	// plain: an opaque body (-body), sent as is; any 2xx answer is right.
	plain bool
}

func (r *review) body(uid string) []byte {
	if r.plain {
		return r.prefix
	}
	body := make([]byte, 0, len(r.prefix)+len(uid)+len(r.suffix))
	return append(append(append(body, r.prefix...), uid...), r.suffix...)
}

// reviewFlags collects -review PATH=allowed|denied.
type reviewFlags []*review

func (f *reviewFlags) String() string { return fmt.Sprint(len(*f), " reviews") }

func (f *reviewFlags) Set(value string) error {
	path, expect, ok := strings.Cut(value, "=")
	if !ok || (expect != "allowed" && expect != "denied") {
		return fmt.Errorf("%q: want PATH=allowed or PATH=denied", value)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var parsed struct {
		Request struct {
			UID string `json:"uid"`
		} `json:"request"`
	}
	if err := json.Unmarshal(data, &parsed); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	uid := []byte(parsed.Request.UID)
	if len(uid) == 0 || bytes.Count(data, uid) != 1 {
		return fmt.Errorf("%s: request.uid must be set and occur once in the body", path)
	}
	at := bytes.Index(data, uid)
	*f = append(*f, &review{
		name:    path,
		prefix:  data[:at],
		suffix:  data[at+len(uid):],
		allowed: expect == "allowed",
	})
	return nil
}

// newUID is a random version 4 UUID, as the API server sends.
func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

type client struct {
	http    *http.Client
	url     string
	newConn atomic.Int64 // connections dialled (TLS handshakes), counted when first used
}

func newClient(url, caFile string, connections int, timeout time.Duration) (*client, error) {
	if caFile == "" {
		// Plain HTTP (-body runs against loopback servers without TLS).
		transport := &http.Transport{
			MaxConnsPerHost:     connections,
			MaxIdleConnsPerHost: connections,
			DisableCompression:  true,
		}
		return &client{http: &http.Client{Transport: transport, Timeout: timeout}, url: url}, nil
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		MaxConnsPerHost:     connections,
		MaxIdleConnsPerHost: connections,
		DisableCompression:  true,
		// HTTP/1.1 only, as kopf's aiohttp server speaks: one request at a time per connection.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	return &client{http: &http.Client{Transport: transport, Timeout: timeout}, url: url}, nil
}

// send posts one review and checks the answer; the error says what was wrong.
func (c *client) send(r *review) error {
	uid := newUID()
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if !info.Reused {
			c.newConn.Add(1)
		}
	}}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(r.body(uid)))
	if err != nil {
		return err
	}
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("Accept", "application/json, */*")
	response, err := c.http.Do(request)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(response.Body)
	_ = response.Body.Close()
	if err != nil {
		return err
	}
	if r.plain {
		if response.StatusCode/100 != 2 {
			return fmt.Errorf("HTTP %d: %.200s", response.StatusCode, data)
		}
		return nil
	}
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.200s", response.StatusCode, data)
	}
	var answer struct {
		Response struct {
			UID     string `json:"uid"`
			Allowed bool   `json:"allowed"`
		} `json:"response"`
	}
	if err := json.Unmarshal(data, &answer); err != nil {
		return fmt.Errorf("answer is not an AdmissionReview: %w", err)
	}
	if answer.Response.UID != uid {
		return fmt.Errorf("answer uid %q, request uid %q", answer.Response.UID, uid)
	}
	if answer.Response.Allowed != r.allowed {
		return fmt.Errorf("%s: allowed=%t, expected %t", r.name, answer.Response.Allowed, r.allowed)
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// The schedule
// ---------------------------------------------------------------------------------------------

type outcome struct {
	latency time.Duration // due time to the answer's last byte
	lag     time.Duration // due time to its goroutine starting: the client's own lateness
	err     error
}

// waitUntil sleeps until `due`. Go's timers wake up to about a millisecond late, which would be
// counted as latency; the last `spin` before the due time is spent yielding in a loop instead.
func waitUntil(due time.Time, spin time.Duration) {
	if d := time.Until(due) - spin; d > 0 {
		time.Sleep(d)
	}
	for time.Now().Before(due) {
		runtime.Gosched()
	}
}

// openLoop sends rate*duration requests, request i due at start + i/rate, each on its own
// goroutine, and waits for every answer.
func openLoop(c *client, reviews []*review, rate float64, duration, spin time.Duration) ([]outcome, time.Duration) {
	count := int(math.Round(rate * duration.Seconds()))
	outcomes := make([]outcome, count)
	var wg sync.WaitGroup
	start := time.Now().Add(10 * time.Millisecond)
	for i := range count {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		waitUntil(due, spin)
		wg.Add(1)
		go func() {
			defer wg.Done()
			lag := time.Since(due)
			err := c.send(reviews[i%len(reviews)])
			outcomes[i] = outcome{latency: time.Since(due), lag: lag, err: err}
		}()
	}
	wg.Wait()
	return outcomes, time.Since(start)
}

// closedLoop sends back to back on one connection for `duration`: requests per second is the
// reciprocal of the round trip, server time included.
func closedLoop(c *client, reviews []*review, duration time.Duration) (float64, []time.Duration, error) {
	var latencies []time.Duration
	start := time.Now()
	for i := 0; time.Since(start) < duration; i++ {
		sent := time.Now()
		if err := c.send(reviews[i%len(reviews)]); err != nil {
			return 0, nil, err
		}
		latencies = append(latencies, time.Since(sent))
	}
	return float64(len(latencies)) / time.Since(start).Seconds(), latencies, nil
}

// warm opens every connection at once (so that the measured run dials none), then sends at the
// measured rate for `duration` so that the server's caches and the connections settle.
func warm(c *client, reviews []*review, connections int, rate float64, duration, spin time.Duration) error {
	errs := make(chan error, connections)
	for range connections {
		go func() { errs <- c.send(reviews[0]) }()
	}
	for range connections {
		if err := <-errs; err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	outcomes, _ := openLoop(c, reviews, rate, duration, spin)
	for _, o := range outcomes {
		if o.err != nil {
			return fmt.Errorf("warm-up: %w", o.err)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

// quantiles are milliseconds; nearest rank.
type quantiles struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

func summarise(durations []time.Duration) quantiles {
	if len(durations) == 0 {
		return quantiles{}
	}
	ordered := slices.Clone(durations)
	slices.Sort(ordered)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	rank := func(q float64) float64 {
		return ms(ordered[max(0, int(math.Ceil(q*float64(len(ordered))))-1)])
	}
	var total time.Duration
	for _, d := range ordered {
		total += d
	}
	return quantiles{
		Mean: ms(total / time.Duration(len(ordered))),
		P50:  rank(0.50),
		P90:  rank(0.90),
		P99:  rank(0.99),
		P999: rank(0.999),
		Max:  ms(ordered[len(ordered)-1]),
	}
}

// cpuWatch reads what a process and a core spent during the measured run, from /proc (Linux
// only; zero when not asked for or not readable).
type cpuWatch struct {
	pid, cpu            int
	procTicks           int64
	coreBusy, coreTotal int64
	coreSteal           int64
	procOK, coreOK      bool
	startedAt           time.Time
}

// Usage is what a watched process and core did during the measured run.
type Usage struct {
	CPUMillisPerRequest float64 `json:"cpu_ms_per_request,omitempty"`
	ProcessCPUPercent   float64 `json:"process_cpu_percent,omitempty"`
	CoreBusyPercent     float64 `json:"core_busy_percent,omitempty"`
	CoreStealPercent    float64 `json:"core_steal_percent,omitempty"`
}

// clockTicks is USER_HZ, the unit of /proc times; 100 on every Linux architecture Go supports.
const clockTicks = 100

func processTicks(pid int) (int64, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields after the command name, which may hold spaces: state is the first, utime the 12th.
	_, rest, ok := bytes.Cut(data, []byte(") "))
	fields := strings.Fields(string(rest))
	if !ok || len(fields) < 13 {
		return 0, false
	}
	user, err1 := strconv.ParseInt(fields[11], 10, 64)
	system, err2 := strconv.ParseInt(fields[12], 10, 64)
	return user + system, err1 == nil && err2 == nil
}

// coreTicks is (busy, total, steal) of one CPU from /proc/stat.
func coreTicks(cpu int) (int64, int64, int64, bool) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	prefix := fmt.Sprintf("cpu%d ", cpu)
	for line := range strings.SplitSeq(string(data), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		var values []int64
		for _, field := range strings.Fields(line)[1:] {
			value, err := strconv.ParseInt(field, 10, 64)
			if err != nil {
				return 0, 0, 0, false
			}
			values = append(values, value)
		}
		if len(values) < 8 {
			return 0, 0, 0, false
		}
		var total int64
		for _, value := range values[:8] { // guest time is already part of user time
			total += value
		}
		idle := values[3] + values[4]
		return total - idle, total, values[7], true
	}
	return 0, 0, 0, false
}

func (w *cpuWatch) start() {
	w.startedAt = time.Now()
	if w.pid > 0 {
		w.procTicks, w.procOK = processTicks(w.pid)
	}
	if w.cpu >= 0 {
		w.coreBusy, w.coreTotal, w.coreSteal, w.coreOK = coreTicks(w.cpu)
	}
}

func (w *cpuWatch) stop(requests int) Usage {
	var s Usage
	elapsed := time.Since(w.startedAt).Seconds()
	if ticks, ok := processTicks(w.pid); w.procOK && ok && requests > 0 {
		seconds := float64(ticks-w.procTicks) / clockTicks
		s.CPUMillisPerRequest = round2(seconds * 1000 / float64(requests))
		s.ProcessCPUPercent = round2(seconds / elapsed * 100)
	}
	if busy, total, steal, ok := coreTicks(w.cpu); w.coreOK && ok && total > w.coreTotal {
		s.CoreBusyPercent = round2(float64(busy-w.coreBusy) / float64(total-w.coreTotal) * 100)
		s.CoreStealPercent = round2(float64(steal-w.coreSteal) / float64(total-w.coreTotal) * 100)
	}
	return s
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

// Report is what `run` prints.
type Report struct {
	URL            string    `json:"url"`
	Rate           float64   `json:"rate"`
	AchievedRate   float64   `json:"achieved_rate"`
	Seconds        float64   `json:"seconds"`
	Connections    int       `json:"connections"`
	NewConnections int64     `json:"new_connections"`
	Count          int       `json:"count"`
	Errors         int       `json:"errors"`
	ErrorSamples   []string  `json:"error_samples,omitempty"`
	Latency        quantiles `json:"latency_ms"`
	SendLag        quantiles `json:"send_lag_ms"`
	Server         Usage     `json:"server"`
	Client         Usage     `json:"client"`
	CapacityRate   float64   `json:"capacity_rate,omitempty"`
	CapacityRTT    quantiles `json:"capacity_rtt_ms,omitzero"`
	GOMAXPROCS     int       `json:"gomaxprocs"`
}

func run(args []string) error {
	flags := flag.NewFlagSet("run", flag.ContinueOnError)
	url := flags.String("url", "", "the webhook's URL (https://host:port/path)")
	caFile := flags.String("ca", "", "PEM file of the CA that signed the webhook's certificate")
	rate := flags.Float64("rate", 300, "requests per second, on a fixed schedule")
	duration := flags.Duration("duration", 10*time.Second, "how long the measured run lasts")
	warmup := flags.Duration("warmup", 2*time.Second, "at the same rate, before measuring")
	connections := flags.Int("connections", 4, "keep-alive connections, all opened before measuring")
	capacity := flags.Duration("capacity", 0, "then back to back on one connection for this long (0: not)")
	timeout := flags.Duration("timeout", 10*time.Second, "per request")
	spin := flags.Duration("spin", time.Millisecond, "yield in a loop this long before each due time")
	watchPID := flags.Int("watch-pid", 0, "report this process's CPU time during the measured run")
	watchCPU := flags.Int("watch-cpu", -1, "report how busy this CPU was during the measured run")
	ownCPU := flags.Int("own-cpu", -1, "the CPU this process is pinned to: report how busy it was too")
	var reviews reviewFlags
	flags.Var(&reviews, "review", "PATH=allowed|denied: an AdmissionReview and its expected answer (repeatable; sent in turn)")
	bodyFile := flags.String("body", "", "instead of -review: POST this file as is over plain HTTP (no -ca); any 2xx is right")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *bodyFile != "" {
		data, err := os.ReadFile(*bodyFile)
		if err != nil {
			return err
		}
		reviews = append(reviews, &review{name: *bodyFile, prefix: data, plain: true})
	}
	if *url == "" || (*caFile == "" && *bodyFile == "") || len(reviews) == 0 || *rate <= 0 || *connections < 1 {
		return errors.New("run needs -url, -ca and -review (or -body), a positive -rate and -connections")
	}
	c, err := newClient(*url, *caFile, *connections, *timeout)
	if err != nil {
		return err
	}
	if err := warm(c, reviews, *connections, *rate, *warmup, *spin); err != nil {
		return err
	}
	dialled := c.newConn.Load()
	watch := cpuWatch{pid: *watchPID, cpu: *watchCPU}
	own := cpuWatch{pid: os.Getpid(), cpu: *ownCPU}
	watch.start()
	own.start()
	outcomes, elapsed := openLoop(c, reviews, *rate, *duration, *spin)
	server := watch.stop(len(outcomes))
	client := own.stop(len(outcomes))
	report := Report{
		URL:            *url,
		Rate:           *rate,
		Seconds:        round2(elapsed.Seconds()),
		Connections:    *connections,
		NewConnections: c.newConn.Load() - dialled,
		Count:          len(outcomes),
		Server:         server,
		Client:         client,
		GOMAXPROCS:     runtime.GOMAXPROCS(0),
	}
	latencies := make([]time.Duration, 0, len(outcomes))
	lags := make([]time.Duration, 0, len(outcomes))
	seen := map[string]bool{}
	for _, o := range outcomes {
		latencies = append(latencies, o.latency)
		lags = append(lags, o.lag)
		if o.err != nil {
			report.Errors++
			if message := o.err.Error(); !seen[message] && len(seen) < 5 {
				seen[message] = true
				report.ErrorSamples = append(report.ErrorSamples, message)
			}
		}
	}
	report.Latency = summarise(latencies)
	report.SendLag = summarise(lags)
	if len(outcomes) > 1 {
		// Sent on schedule unless the scheduler fell behind; finished when the last answer came.
		report.AchievedRate = round2(float64(len(outcomes)) / elapsed.Seconds())
	}
	if *capacity > 0 {
		rps, rtts, err := closedLoop(c, reviews, *capacity)
		if err != nil {
			return fmt.Errorf("capacity: %w", err)
		}
		report.CapacityRate = round2(rps)
		report.CapacityRTT = summarise(rtts)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	return encoder.Encode(report)
}

// ---------------------------------------------------------------------------------------------
// The floor: a webhook that allows everything
// ---------------------------------------------------------------------------------------------

func serve(args []string) error {
	flags := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := flags.String("addr", "127.0.0.1:8443", "where to listen")
	cert := flags.String("cert", "", "PEM certificate")
	key := flags.String("key", "", "PEM private key")
	if err := flags.Parse(args); err != nil {
		return err
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review struct {
			APIVersion string `json:"apiVersion"`
			Request    struct {
				UID string `json:"uid"`
			} `json:"request"`
		}
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"apiVersion": review.APIVersion,
			"kind":       "AdmissionReview",
			"response":   map[string]any{"uid": review.Request.UID, "allowed": true},
		})
	})
	server := &http.Server{
		Addr:              *addr,
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12},
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	return server.ListenAndServeTLS(*cert, *key)
}
