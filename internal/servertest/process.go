package servertest

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// ProcessOptions say how to run a server.
type ProcessOptions struct {
	// Command returns the command that runs the server on 127.0.0.1:port.
	// It is called for every start, so it may change between them.
	Command func(port int) *exec.Cmd

	// Ready returns nil once the server on port answers. A start calls it,
	// with a context of a second, until it does.
	Ready func(ctx context.Context, port int) error
}

// A Process is a private server on a free port, which a test kills,
// pauses and restarts without disturbing the shared server the other
// tests use. Its methods fail the test that started it.
type Process struct {
	Port int

	t    testing.TB
	opts ProcessOptions
	cmd  *exec.Cmd  // nil while not running
	exit chan error // receives what cmd's Wait returned
	log  *syncBuffer
}

// StartProcess starts a server on a free port and waits until it is
// ready. When t ends, the server is killed if it is running, resumed
// first if it is paused.
func StartProcess(t testing.TB, opts ProcessOptions) *Process {
	t.Helper()
	p := &Process{Port: FreePort(t), t: t, opts: opts}
	t.Cleanup(func() {
		if p.cmd != nil {
			p.cont()
			p.Kill()
		}
	})
	p.Start()
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs the server, again after Kill, and waits until it is ready.
// A server that exits while starting is started again, because one killed
// a moment ago may still hold its port or shared memory.
func (p *Process) Start() {
	p.t.Helper()
	if p.cmd != nil {
		p.t.Fatal("servertest: Start of a running server")
	}
	deadline := time.Now().Add(Timeout)
	for {
		p.log = &syncBuffer{}
		cmd := p.opts.Command(p.Port)
		if cmd.Stdout == nil {
			cmd.Stdout = p.log
		}
		if cmd.Stderr == nil {
			cmd.Stderr = p.log
		}
		if err := cmd.Start(); err != nil {
			p.t.Fatalf("starting %s: %v", cmd.Path, err)
		}
		exit := make(chan error, 1)
		go func() { exit <- cmd.Wait() }()
		p.cmd, p.exit = cmd, exit
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := p.opts.Ready(ctx, p.Port)
			cancel()
			if err == nil {
				return
			}
			select {
			case exitErr := <-exit:
				p.cmd = nil
				if time.Now().After(deadline) {
					p.t.Fatalf("%s on port %d exited: %v\n%s", cmd.Path, p.Port, exitErr, p.log)
				}
			case <-time.After(20 * time.Millisecond): // polling for the server to come up
				if time.Now().After(deadline) {
					p.t.Fatalf("%s on port %d is not ready: %v\n%s", cmd.Path, p.Port, err, p.log)
				}
				continue
			}
			break
		}
	}
}

// Kill ends the server, and the processes it started, as a crash would.
func (p *Process) Kill() {
	p.kill()
	<-p.exit
	p.cmd = nil
}

// Stop pauses the server and its processes (SIGSTOP), as a frozen machine
// would: connections stay open, nothing answers.
func (p *Process) Stop() { p.stop() }

// Cont resumes a server that Stop paused.
func (p *Process) Cont() { p.cont() }

// A syncBuffer keeps what a server writes, for the failure messages.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
