package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestHarness runs the harness end to end on a few subscribers of each
// transport, so that it keeps working; its figures are not checked here.
func TestHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the harness")
	}
	bin := build(t)
	// Every transport's drain is tested in the root package and in the
	// browser; here, the scenario's figures, on one.
	for _, transport := range []string{"ws"} {
		t.Run(transport, func(t *testing.T) {
			args := []string{"-n", "50", "-transport", transport, "-burst", "20", "-rate", "20", "-duration", "1s"}
			if transport != "poll" {
				args = append(args, "-slow", "2")
			} else {
				args = append(args, "-storm=false")
			}
			r, b := run(t, bin, args...)
			if r.N != 50 || r.BurstLost != 0 || r.LatencyLost != 0 || r.SlowLost != 0 || r.StormLost != 0 || r.StormDups != 0 {
				t.Errorf("results: %s", b)
			}
			if r.BurstPerSecond <= 0 || transport != "poll" && (r.StormSeconds <= 0 || r.StormDelivered == 0) {
				t.Errorf("missing figures: %s", b)
			}
		})
	}
}

// TestPeers runs every peer library through the phases on a few
// subscribers, so that -peers keeps working.
func TestPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the harness")
	}
	bin := build(t)
	for name := range peerRoutes {
		t.Run(name, func(t *testing.T) {
			r, b := run(t, bin, "-server", name, "-n", "30", "-burst", "20", "-rate", "20", "-duration", "1s", "-storm=false")
			if r.Server != name || r.N != 30 || r.BurstPerSecond <= 0 || r.P99ms <= 0 {
				t.Errorf("results: %s", b)
			}
		})
	}
}

// TestNodes runs three servers on each broker the environment names
// (LIVE_REDIS_URL, LIVE_NATS_URL, LIVE_POSTGRES_URL), subscribers spread
// over them, so that -nodes keeps working.
func TestNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the harness")
	}
	bin := build(t)
	for _, broker := range []string{"redis", "nats", "postgres"} {
		t.Run(broker, func(t *testing.T) {
			if os.Getenv(brokerURLs[broker].env) == "" {
				t.Skipf("%s is not set", brokerURLs[broker].env)
			}
			r, b := run(t, bin, "-nodes", "3", "-broker", broker, "-n", "60", "-transport", "ws",
				"-burst", "20", "-rate", "30", "-duration", "1s")
			if r.Nodes != 3 || r.N != 60 || r.BurstLost != 0 || r.LatencyLost != 0 || r.AllLost != 0 || r.StormLost != 0 || r.StormDups != 0 {
				t.Errorf("results: %s", b)
			}
			if r.CrossP99ms <= 0 || r.AllCrossP99ms <= 0 || r.StormDelivered == 0 {
				t.Errorf("missing figures: %s", b)
			}
		})
	}
}

// build builds the harness for t.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "liveload")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// run runs the harness with args and returns what it wrote with -json,
// decoded and as it was.
func run(t *testing.T, bin string, args ...string) (result, []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "result.json")
	if b, err := exec.Command(bin, append(args, "-json", out)...).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r result
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r, b
}

// TestDrain runs the drain scenario on three servers sharing Redis, on a
// few subscribers of each transport, so that -drain keeps working: none
// loses or repeats a publication, and the drained move is the slower one.
func TestDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the harness")
	}
	if os.Getenv(brokerURLs["redis"].env) == "" {
		t.Skipf("%s is not set", brokerURLs["redis"].env)
	}
	bin := build(t)
	// Every transport's drain is tested in the root package and in the
	// browser; here, the scenario's figures, on one.
	for _, transport := range []string{"ws"} {
		t.Run(transport, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "drain.json")
			if b, err := exec.Command(bin, "-drain", "-nodes", "3", "-broker", "redis", "-n", "60", "-transport", transport,
				"-rate", "20", "-drain-window", "1s", "-json", out).CombinedOutput(); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			var r struct{ Runs []drainResult }
			if err := json.Unmarshal(b, &r); err != nil || len(r.Runs) != 2 {
				t.Fatalf("results: %s (%v)", b, err)
			}
			for _, run := range r.Runs {
				if run.Moved != 20 || run.Lost != 0 || run.Dups != 0 || run.Resets != 0 || run.Delivered != 60*int64(20*6) || run.PeakPer100ms <= 0 {
					t.Errorf("results: %s", b)
				}
			}
			if !r.Runs[1].Drain || r.Runs[1].MoveSeconds < 0.5 {
				t.Errorf("the drained move: %s", b)
			}
		})
	}
}

// TestMany runs the many-channel scenario on a few subscribers, on live's
// two transports and on two peers, and the follow mode on a few channels,
// on the memory broker and on Redis when LIVE_REDIS_URL is set, so that
// -channels and -follow keep working. The runs mostly wait, so they go
// all at once.
func TestMany(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the harness")
	}
	bin := build(t)
	type check func(t *testing.T, b []byte)
	var runs []struct {
		name  string
		out   <-chan harnessRun
		check check
	}
	add := func(name string, c check, args ...string) {
		runs = append(runs, struct {
			name  string
			out   <-chan harnessRun
			check check
		}{name, startHarness(t, bin, args...), c})
	}
	for _, tc := range []struct{ name, server, transport, channels string }{
		{"live-sse-own", "live", "sse", "own"},
		{"live-sse-shared", "live", "sse", "own+shared"},
		{"live-ws-shared", "live", "ws", "own+shared"},
		{"r3labs-own", "r3labs", "sse", "own"},
		{"centrifuge-shared", "centrifuge", "ws", "own+shared"},
	} {
		add(tc.name, func(t *testing.T, b []byte) {
			var r manyResult
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if r.N != 50 || r.Channels != tc.channels || r.Published != 2000 || r.Delivered != 2000 || r.Lost != 0 || r.Dups != 0 || r.Resets != 0 {
				t.Errorf("results: %s", b)
			}
			if r.IdleHeapStack <= 0 || r.P99ms <= 0 || r.CPUPerDelivery <= 0 {
				t.Errorf("missing figures: %s", b)
			}
		}, "-channels", tc.channels, "-server", tc.server, "-transport", tc.transport, "-n", "50", "-rate", "2000", "-duration", "1s")
	}
	for _, broker := range []string{"memory", "redis"} {
		if broker != "memory" && os.Getenv(brokerURLs[broker].env) == "" {
			t.Logf("follow on %s: skipped, %s is not set", broker, brokerURLs[broker].env)
			continue
		}
		add("follow-"+broker, func(t *testing.T, b []byte) {
			var r followResult
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if r.Channels != 200 || r.Streams != 4 || r.HubChannels != 200 || r.CheckPublished != 200 || r.CheckDelivered != 200 || r.StreamErrors != 0 {
				t.Errorf("results: %s", b)
			}
			if r.FollowSeconds <= 0 || r.HeapStackPerChannel <= 0 || r.GoroutinesPerChan <= 0 {
				t.Errorf("missing figures: %s", b)
			}
		}, "-follow", "200", "-follow-per-stream", "50", "-follow-idle", "1s", "-broker", broker)
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			out := <-r.out
			if out.err != nil {
				t.Fatalf("%v\n%s", out.err, out.output)
			}
			r.check(t, out.json)
		})
	}
}

// harnessRun is what one run of the harness wrote: its output, and what
// it wrote with -json.
type harnessRun struct {
	output, json []byte
	err          error
}

// startHarness runs the harness with args in the background; the channel
// gives what it wrote once it ends.
func startHarness(t *testing.T, bin string, args ...string) <-chan harnessRun {
	out := filepath.Join(t.TempDir(), "result.json")
	c := make(chan harnessRun, 1)
	go func() {
		var r harnessRun
		if r.output, r.err = exec.Command(bin, append(args, "-json", out)...).CombinedOutput(); r.err == nil {
			r.json, r.err = os.ReadFile(out)
		}
		c <- r
	}()
	return c
}
