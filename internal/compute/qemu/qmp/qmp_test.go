package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// fakeQEMU speaks enough QMP to test the client: a greeting, events in the
// middle of replies, and errors.
func fakeQEMU(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
		s := bufio.NewScanner(c)
		for s.Scan() {
			var req struct {
				Execute string `json:"execute"`
				ID      int    `json:"id"`
			}
			json.Unmarshal(s.Bytes(), &req)
			c.Write([]byte(`{"event": "RESET", "timestamp": {}}` + "\n"))
			switch req.Execute {
			case "qmp_capabilities":
				c.Write([]byte(`{"return": {}, "id": ` + itoa(req.ID) + "}\n"))
			case "query-status":
				c.Write([]byte(`{"return": {"status": "shutdown", "running": false}, "id": ` + itoa(req.ID) + "}\n"))
			default:
				c.Write([]byte(`{"error": {"class": "CommandNotFound", "desc": "nope"}, "id": ` + itoa(req.ID) + "}\n"))
			}
		}
	}()
	return path
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := Dial(ctx, fakeQEMU(t))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	st, err := q.Status(ctx)
	if err != nil || st != "shutdown" {
		t.Fatalf("status %q %v", st, err)
	}
	if _, err := q.Execute(ctx, "bogus", nil); err == nil {
		t.Fatal("error reply not returned")
	} else if e, ok := err.(*Error); !ok || e.Class != "CommandNotFound" {
		t.Fatalf("error: %#v", err)
	}
}
