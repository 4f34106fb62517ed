package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/errdefs"
	runcC "github.com/containerd/go-runc"
	"github.com/containerd/typeurl/v2"

	"github.com/warmshim/warm/internal/runctask"
	"github.com/warmshim/warm/oci"
)

// checkpoint dumps a running or paused container with every CheckpointOptions field
// honoured. containerd's process.Init.Checkpoint drops cgroups_mode, so warm calls runc
// itself; the process state machine is unchanged by a checkpoint (with exit=true the
// init's exit arrives through the reaper like any other).
func checkpoint(ctx context.Context, c *runctask.Container, r *taskAPI.CheckpointTaskRequest) error {
	p, err := c.Process("")
	if err != nil {
		return err
	}
	ip := p.(*process.Init)
	st, err := ip.Status(ctx)
	if err != nil {
		return err
	}
	if st != "running" && st != "paused" {
		return fmt.Errorf("cannot checkpoint a %s container: %w", st, errdefs.ErrFailedPrecondition)
	}
	var opts options.CheckpointOptions
	if r.Options != nil {
		if err := typeurl.UnmarshalTo(r.Options, &opts); err != nil {
			return fmt.Errorf("checkpoint options: %w: %w", errdefs.ErrInvalidArgument, err)
		}
	}
	mode, err := cgroupMode(opts.CgroupsMode)
	if err != nil {
		return err
	}
	image := r.Path
	if opts.ImagePath != "" {
		image = opts.ImagePath
	}
	work := opts.WorkPath
	if work == "" {
		work = filepath.Join(ip.WorkDir, "criu-work")
		defer os.RemoveAll(work)
	}
	var actions []runcC.CheckpointAction
	if !opts.Exit {
		actions = append(actions, runcC.LeaveRunning)
	}
	err = ip.Runtime().Checkpoint(ctx, c.ID, &runcC.CheckpointOpts{
		WorkDir:                  work,
		ImagePath:                image,
		ParentPath:               opts.ParentPath,
		AllowOpenTCP:             opts.OpenTcp,
		AllowExternalUnixSockets: opts.ExternalUnixSockets,
		AllowTerminal:            opts.Terminal,
		FileLocks:                opts.FileLocks,
		EmptyNamespaces:          opts.EmptyNamespaces,
		Cgroups:                  mode,
	}, actions...)
	if err != nil {
		dumpLog := filepath.Join(c.Bundle, "criu-dump.log")
		_ = oci.CopyFile(dumpLog, filepath.Join(work, "dump.log"), 0o600)
		return fmt.Errorf("checkpoint %s: %w (CRIU log %s: %s)", c.ID, err, dumpLog, oci.CriuErrors(dumpLog))
	}
	return nil
}

func cgroupMode(m string) (runcC.CgroupMode, error) {
	switch m {
	case "":
		return "", nil
	case "soft", "full", "strict", "ignore":
		return runcC.CgroupMode(m), nil
	}
	return "", fmt.Errorf("checkpoint option cgroups_mode %q: %w: use soft, full, strict or ignore", m, errdefs.ErrInvalidArgument)
}

// checkpointImagePath is where a Checkpoint RPC wrote its images.
func checkpointImagePath(r *taskAPI.CheckpointTaskRequest) string {
	var opts options.CheckpointOptions
	if r.Options != nil {
		if err := typeurl.UnmarshalTo(r.Options, &opts); err == nil && opts.ImagePath != "" {
			return opts.ImagePath
		}
	}
	return r.Path
}
