//go:build unix

package servertest

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

func (p *Process) kill() { p.signal(syscall.SIGKILL) }
func (p *Process) stop() { p.signal(syscall.SIGSTOP) }
func (p *Process) cont() { p.signal(syscall.SIGCONT) }

// signal signals the server and its children (the backends of
// PostgreSQL, which run in sessions of their own).
func (p *Process) signal(sig syscall.Signal) {
	p.t.Helper()
	if p.cmd == nil {
		p.t.Fatal("servertest: the server is not running")
	}
	pid := p.cmd.Process.Pid
	pids := []int{pid}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces, so split after ")".
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			pids = append(pids, child)
		}
	}
	for _, pid := range pids {
		syscall.Kill(pid, sig)
	}
}
