//go:build !unix

package servertest

// Elsewhere than Unix a server can be killed, not paused.

func (p *Process) kill() {
	p.t.Helper()
	if p.cmd == nil {
		p.t.Fatal("servertest: the server is not running")
	}
	p.cmd.Process.Kill()
}

func (p *Process) stop() {
	p.t.Helper()
	p.t.Skip("servertest: pausing a server needs Unix signals")
}

func (p *Process) cont() {}
