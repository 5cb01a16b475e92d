package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-live/live/internal/servertest"
)

// TestPrometheusScrapes runs a real Prometheus server (the prometheus
// command, as Debian packages it; .ci/run installs it) that scrapes the
// dashboard's /metrics, and asks it, as a dashboard would, for quantiles
// of the hub's histograms.
func TestPrometheusScrapes(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed (apt-get install prometheus); .ci/run installs it")
	}
	n := newNode(t, appOptions{Tick: 10 * time.Millisecond})
	stream := servertest.OpenStream(t, n.url+"/api/live/"+metricsChannel, "")
	stream.Next(t)

	target := strings.TrimPrefix(n.url, "http://")
	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	err = os.WriteFile(config, fmt.Appendf(nil, `global:
  scrape_interval: 200ms
  scrape_timeout: 150ms
scrape_configs:
  - job_name: dashboard
    static_configs:
      - targets: [%q]
`, target), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin,
		"--config.file="+config,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(waitTimeout):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus said:\n%s", logs.String())
		}
	})

	api := "http://" + addr + "/api/v1/query?query="
	// query returns the value of the one sample expr evaluates to, and
	// whether there is one; it fails t if Prometheus exited.
	query := func(expr string) (float64, bool) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("prometheus exited: %v\n%s", err, logs.String())
		default:
		}
		resp, err := http.Get(api + url.QueryEscape(expr))
		if err != nil {
			return 0, false // not listening yet
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			return 0, false // listening, but its storage is not ready yet
		}
		var r struct {
			Status string
			Data   struct {
				Result []struct{ Value [2]any }
			}
		}
		body, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
			t.Fatalf("query %s: %s %s", expr, resp.Status, body)
		}
		if len(r.Data.Result) != 1 {
			return 0, false
		}
		s, _ := r.Data.Result[0].Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		return v, err == nil && s != "NaN"
	}
	await := func(expr string) float64 {
		t.Helper()
		deadline := time.After(30 * time.Second)
		tick := time.NewTicker(100 * time.Millisecond) // another process: nothing to wait on but its answers
		defer tick.Stop()
		for {
			if v, ok := query(expr); ok {
				return v
			}
			select {
			case <-tick.C:
			case <-deadline:
				t.Fatalf("no value for %s within 30s", expr)
			}
		}
	}

	// The broker round trip of the node's own publications (in memory:
	// well under a second), and how long they took from the broker to the
	// stream's socket.
	publish := await(`histogram_quantile(0.9, sum by (le) (rate(live_publish_seconds_bucket{channel="metrics:dashboard"}[2s])))`)
	if publish <= 0 || publish > 1 {
		t.Errorf("p90 of live_publish_seconds = %v s, want within (0, 1]", publish)
	}
	write := await(`histogram_quantile(0.5, sum by (le) (rate(live_write_latency_seconds_bucket{transport="sse"}[2s])))`)
	if write <= 0 || write > 1 {
		t.Errorf("median of live_write_latency_seconds{transport=\"sse\"} = %v s, want within (0, 1]", write)
	}
	if conns := await(`live_connections{transport="sse"}`); conns != 1 {
		t.Errorf("live_connections{transport=\"sse\"} = %v, want 1", conns)
	}
}

// freeAddr returns a local address nothing listens on.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
