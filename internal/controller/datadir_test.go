package controller_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/controller"
	"github.com/clipper-cloud/clipper/internal/service"
)

// TestDataDirIsPrivateAndKept: the data directory and the database (which
// holds the admin secret) are private even when the directory existed with
// 0755; a previous run's aws.env is gone until the API answers again; the
// admin credentials survive a restart.
func TestDataDirIsPrivateAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := controller.Config{DataDir: dir, Listen: "127.0.0.1:0", NodeListen: "127.0.0.1:0", Service: service.DefaultConfig(), Logger: log}
	start := func() (*controller.Controller, func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		c, err := controller.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "aws.env")); !os.IsNotExist(err) {
			t.Fatalf("aws.env exists before the API answers: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		select {
		case <-c.Ready():
		case err := <-done:
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatal("not ready")
		}
		return c, func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
		}
	}
	c, stop := start()
	first := c.Credentials()
	stop()
	for name, want := range map[string]os.FileMode{".": 0o700, "clipper.db": 0o600, "aws.env": 0o600, "join-token": 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: %v %v, want %v", name, st.Mode().Perm(), err, want)
		}
	}
	// Loosened by hand: the next start makes them private again.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Join(dir, "clipper.db"), 0o644)
	c, stop = start()
	defer stop()
	if got := c.Credentials(); got.ID != first.ID || got.Secret != first.Secret {
		t.Fatalf("credentials changed across a restart: %s -> %s", first.ID, got.ID)
	}
	for name, want := range map[string]os.FileMode{".": 0o700, "clipper.db": 0o600} {
		if st, _ := os.Stat(filepath.Join(dir, name)); st.Mode().Perm() != want {
			t.Fatalf("after restart %s: %v, want %v", name, st.Mode().Perm(), want)
		}
	}
}
