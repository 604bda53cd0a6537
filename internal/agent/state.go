package agent

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
)

// localState is what the agent remembers about an instance across restarts:
// which desired revision it last carried out, and on which host boot.
type localState struct {
	AppliedRev int64  `json:"applied_rev"`
	RebootSeq  int    `json:"reboot_seq"`
	BootID     string `json:"boot_id"`
}

func (a *Agent) statePath(id string) string {
	return filepath.Join(a.cfg.DataDir, "instances", id+".json")
}

func (a *Agent) loadState(id string) localState {
	var st localState
	b, err := os.ReadFile(a.statePath(id))
	if err == nil {
		if json.Unmarshal(b, &st) != nil {
			st = localState{}
		}
	}
	return st
}

func (a *Agent) saveState(id string, st localState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := a.statePath(id) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, a.statePath(id))
}

func (a *Agent) dropState(id string) error {
	err := os.Remove(a.statePath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
