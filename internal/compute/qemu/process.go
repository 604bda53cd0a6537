package qemu

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// livePID returns the PID of the instance's QEMU if it is alive and really
// is that instance's QEMU (its command line names the instance), else 0.
func (d *Driver) livePID(id string) int {
	b, err := os.ReadFile(d.path(id, pidFile))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if !isInstanceProcess(pid, id) {
		return 0
	}
	return pid
}

// isInstanceProcess checks /proc: alive, not a zombie, and started with
// "-name <id>". PIDs are reused; the command line is the proof.
func isInstanceProcess(pid int, id string) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if f := statFields(stat); len(f) > 0 && (f[0] == "Z" || f[0] == "X") {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return bytes.Contains(cmdline, []byte("\x00-name\x00guest="+id+"\x00"))
}

// statFields returns /proc/<pid>/stat fields after the command name, from
// the state field on.
func statFields(stat []byte) []string {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(stat[i+1:]))
}

// processStart returns when a process started, from /proc.
func processStart(pid int) time.Time {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return time.Time{}
	}
	f := statFields(stat)
	if len(f) < 20 {
		return time.Time{}
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64) // field 22: starttime
	if err != nil {
		return time.Time{}
	}
	return bootTime().Add(time.Duration(ticks) * time.Second / 100) // USER_HZ is 100 on Linux
}

func bootTime() time.Time {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			s, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Unix(s, 0)
		}
	}
	return time.Time{}
}

// waitGone waits for the instance's process to end.
func waitGone(pid int, id string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !isInstanceProcess(pid, id) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return !isInstanceProcess(pid, id)
}

func killPID(pid int) { syscall.Kill(pid, syscall.SIGKILL) }
