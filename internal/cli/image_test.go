package cli

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func qcow2Header(backing uint64, size uint64) []byte {
	h := make([]byte, 72)
	copy(h, "QFI\xfb")
	binary.BigEndian.PutUint32(h[4:], 3)
	binary.BigEndian.PutUint64(h[8:], backing)
	binary.BigEndian.PutUint64(h[24:], size)
	return h
}

func TestDiskInfo(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name   string
		data   []byte
		format string
		size   int64
		err    string
	}{
		{"flat.qcow2", qcow2Header(0, 1<<30), "qcow2", 1 << 30, ""},
		{"overlay.qcow2", qcow2Header(0x48, 1<<30), "", 0, "backing file"},
		{"nosize.qcow2", qcow2Header(0, 0), "", 0, "no disk size"},
		{"disk.raw", make([]byte, 4096), "raw", 4096, ""},
		{"tiny.raw", []byte("x"), "raw", 1, ""},
		{"empty.raw", nil, "", 0, "empty"},
	} {
		format, size, err := diskInfo(write(tc.name, tc.data))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || format != tc.format || size != tc.size {
			t.Errorf("%s: %s %d %v, want %s %d", tc.name, format, size, err, tc.format, tc.size)
		}
	}
	if _, _, err := diskInfo(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file gave no error")
	}
}

// FuzzDiskInfo: any file content gives a format and a positive size, or an
// error; never a panic.
func FuzzDiskInfo(f *testing.F) {
	f.Add(qcow2Header(0, 1<<30))
	f.Add(qcow2Header(1, 1<<30))
	f.Add([]byte("QFI\xfb"))
	f.Add([]byte("plain bytes"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "disk")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		format, size, err := diskInfo(p)
		if err == nil && (size <= 0 || (format != "qcow2" && format != "raw")) {
			t.Fatalf("%q gave %s %d", b, format, size)
		}
	})
}
