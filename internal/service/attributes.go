package service

import (
	"context"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// AttributeChange is a ModifyInstanceAttribute request; nil fields stay.
type AttributeChange struct {
	GroupIDs              []string
	InstanceType          string
	UserData              []byte
	UserDataSet           bool
	DisableAPITermination *bool
	DisableAPIStop        *bool
	ShutdownBehavior      string
	SourceDestCheck       *bool
}

// ModifyInstanceAttribute changes one attribute of an instance. Groups can
// change while it runs; type and user data only while it is stopped.
func (s *Service) ModifyInstanceAttribute(ctx context.Context, c Caller, id string, ch AttributeChange) error {
	if err := checkInstanceIDs([]string{id}); err != nil {
		return err
	}
	if ch.ShutdownBehavior != "" && ch.ShutdownBehavior != "stop" {
		return model.InvalidParam("InstanceInitiatedShutdownBehavior", "Only 'stop' is supported")
	}
	if ch.SourceDestCheck != nil && !*ch.SourceDestCheck {
		return model.Errorf(model.KindUnsupported, "", "SourceDestCheck", "Turning off the source/destination check is not supported")
	}
	if ch.InstanceType != "" {
		if _, ok := s.types[ch.InstanceType]; !ok {
			return model.InvalidParam("InstanceType", "The instance type '%s' does not exist", ch.InstanceType)
		}
	}
	if ch.UserDataSet && len(ch.UserData) > MaxUserData {
		return model.InvalidParam("UserData", "User data is limited to %d bytes", MaxUserData)
	}
	var notify []string
	err := s.update(ctx, func(tx store.Tx) error {
		notify = nil
		insts, err := loadOwned(tx, c, []string{id})
		if err != nil {
			return err
		}
		i := insts[0]
		if i.State == model.StateTerminated || i.State == model.StateShuttingDown {
			return incorrectState(&i, "modified")
		}
		nodeChange := false
		if ch.GroupIDs != nil {
			groups, _, err := s.resolveInstanceGroups(tx, c, i.VPCID, ch.GroupIDs, nil)
			if err != nil {
				return err
			}
			if err := tx.SetInstanceGroups(i.ID, groups); err != nil {
				return err
			}
			nodeChange = true
			peers, err := tx.VPCNodes([]string{i.VPCID})
			if err != nil {
				return err
			}
			notify = append(notify, peers...)
		}
		if ch.InstanceType != "" || ch.UserDataSet {
			if i.State != model.StateStopped {
				return model.Errorf(model.KindIncorrectState, model.ResInstance, i.ID,
					"The instance '%s' is not in the 'stopped' state.", i.ID)
			}
			if ch.InstanceType != "" {
				t := s.types[ch.InstanceType]
				i.InstanceType, i.VCPUs, i.MemoryMiB = t.Name, t.VCPUs, t.MemoryMiB
			}
			if ch.UserDataSet {
				i.UserData = ch.UserData
			}
			nodeChange = true
		}
		if ch.DisableAPITermination != nil {
			i.DisableAPITermination = *ch.DisableAPITermination
		}
		if ch.DisableAPIStop != nil {
			i.DisableAPIStop = *ch.DisableAPIStop
		}
		if nodeChange {
			if i.Rev, err = tx.NextRev(); err != nil {
				return err
			}
			notify = append(notify, i.NodeID)
		}
		return tx.UpdateInstance(i)
	})
	if err != nil {
		return err
	}
	s.notify.NodesChanged(dedupe(notify)...)
	s.watch.fire(id)
	return nil
}

// ModifyMetadataOptions changes an instance's IMDS settings; the node
// applies them at once.
func (s *Service) ModifyMetadataOptions(ctx context.Context, c Caller, id string, in MetadataInput) (model.Instance, error) {
	if err := checkInstanceIDs([]string{id}); err != nil {
		return model.Instance{}, err
	}
	var inst model.Instance
	err := s.update(ctx, func(tx store.Tx) error {
		insts, err := loadOwned(tx, c, []string{id})
		if err != nil {
			return err
		}
		inst = insts[0]
		if inst.State == model.StateTerminated {
			return incorrectState(&inst, "modified")
		}
		if inst.Metadata, err = in.apply(inst.Metadata); err != nil {
			return err
		}
		if inst.Rev, err = tx.NextRev(); err != nil {
			return err
		}
		return tx.UpdateInstance(inst)
	})
	if err != nil {
		return model.Instance{}, err
	}
	s.notify.NodesChanged(inst.NodeID)
	return inst, nil
}

// Instance returns one of the caller's instances.
func (s *Service) Instance(ctx context.Context, c Caller, id string) (model.Instance, error) {
	if err := checkInstanceIDs([]string{id}); err != nil {
		return model.Instance{}, err
	}
	var inst model.Instance
	err := s.view(ctx, func(tx store.Tx) error {
		insts, err := loadOwned(tx, c, []string{id})
		if err != nil {
			return err
		}
		if err := s.decorate(tx, c.AccountID, insts); err != nil {
			return err
		}
		inst = insts[0]
		return nil
	})
	return inst, err
}

// GroupNames maps the caller's group IDs to names.
func (s *Service) GroupNames(ctx context.Context, c Caller) (map[string]string, error) {
	var out map[string]string
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		out, err = groupNames(tx, c.AccountID)
		return err
	})
	return out, err
}

func groupNames(tx store.Tx, accountID string) (map[string]string, error) {
	out := map[string]string{}
	gs, err := tx.ListGroups(accountID)
	for _, g := range gs {
		out[g.ID] = g.Name
	}
	return out, err
}
