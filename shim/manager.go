// Package shim is warm's containerd shim: the short-lived start/stop manager and the
// long-lived TTRPC task service.
package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/version"
	"github.com/containerd/errdefs"
	runcC "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/internal/group"
	"github.com/warmshim/warm/internal/hwbreak"
	"github.com/warmshim/warm/internal/runctask"
	"github.com/warmshim/warm/oci"
	"github.com/warmshim/warm/oci/wrap"
)

// hwbreakDir keeps, for the boot, whether the host's hardware breakpoints fire
// (internal/hwbreak): the default run_dir, since the start action reads no configuration.
var hwbreakDir = config.Default().RunDir

// RuntimeName is the runtime type containerd knows warm by.
const RuntimeName = "io.containerd.warm.v2"

// GroupAnnotation puts containers that carry the same value into one shim process.
const GroupAnnotation = group.Annotation

// NewManager returns the shim manager containerd drives through the start, delete and
// -info actions.
func NewManager() shim.Shim { return manager{} }

type manager struct{}

func (manager) Name() string { return RuntimeName }

// PoolGroup is the group key of the namespace's pool shim: every container that makes
// or names a template goes to it (the socket address also hashes the namespace).
const PoolGroup = group.Pool

// Start is the start action. For a container that joins a running shim, containerd's
// runtime front (cmd/containerd-shim-warm-v2, internal/fastjoin) answers before this
// runs, with the same answer (TestStartFront keeps them equal): what decides the group or
// the address here must be decided there too.
func (manager) Start(ctx context.Context, opts *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	res := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc"}
	id := opts.GetInstanceID()
	debug := opts.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG

	// Before the shim's environment is made from this one: where the host's hardware
	// breakpoints do not fire, the shim, runc and CRIU get CRIU_FAULT=130.
	if r := hwbreak.Apply(hwbreakDir); r.Err != nil {
		log.G(ctx).WithError(r.Err).Warn("CRIU keeps its default breakpoints")
	}
	cmd, err := newCommand(ctx, id, opts.GetContainerdGrpcAddress(), debug)
	if err != nil {
		return nil, err
	}
	// containerd runs start in the bundle directory.
	sf, err := oci.OpenSpec(".")
	if err != nil {
		return nil, fmt.Errorf("read bundle spec: %w", err)
	}
	scoped := group.Scope(sf.Annotations)
	if err := group.Check(scoped); err != nil {
		return nil, err
	}
	grouping := group.Key(id, scoped)
	if grouping == PoolGroup {
		cmd.Env = append(cmd.Env, EnvPoolShim+"=1")
	}

	var sockets []*shimSocket
	defer func() {
		if retErr != nil {
			for _, s := range sockets {
				s.Close()
			}
		}
	}()
	socketDir := opts.GetSocketDir()
	if socketDir == "" {
		socketDir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	s, err := newShimSocket(ctx, socketDir, opts.GetContainerdGrpcAddress(), grouping, false)
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			// A shim of this group already serves: the container joins it.
			res.Address = s.addr
			return res, nil
		}
		return nil, err
	}
	sockets = append(sockets, s)
	cmd.ExtraFiles = append(cmd.ExtraFiles, s.f)
	if debug {
		ds, err := newShimSocket(ctx, socketDir, opts.GetContainerdGrpcAddress(), grouping, true)
		if err != nil {
			return nil, err
		}
		sockets = append(sockets, ds)
		cmd.ExtraFiles = append(cmd.ExtraFiles, ds.f)
	}
	// A start action whose stderr is a file (warmctl start gives it one) passes it on, so
	// a panic or a SIGQUIT dump of the shim lands there. containerd reads a start
	// action's output through pipes until they close: those are never inherited.
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode().IsRegular() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			cmd.Process.Kill()
		}
	}()
	go cmd.Wait()

	var ropts options.Options
	if found, err := opts.FindExtension(&ropts); err != nil {
		log.G(ctx).WithError(err).Debug("bootstrap options are not runc options")
	} else if found && ropts.GetShimCgroup() != "" {
		if err := joinCgroup(ropts.GetShimCgroup(), cmd.Process.Pid); err != nil {
			return nil, err
		}
	}
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		return nil, fmt.Errorf("adjust OOM score of shim: %w", err)
	}
	res.Address = sockets[0].addr
	return res, nil
}

func joinCgroup(path string, pid int) error {
	if cgroups.Mode() == cgroups.Unified {
		cg, err := cgroupsv2.Load(path)
		if err != nil {
			return fmt.Errorf("load cgroup %s: %w", path, err)
		}
		return cg.AddProc(uint64(pid))
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(path))
	if err != nil {
		return fmt.Errorf("load cgroup %s: %w", path, err)
	}
	return cg.AddProc(uint64(pid))
}

func newCommand(ctx context.Context, id, containerdAddress string, debug bool) (*exec.Cmd, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", containerdAddress}
	if debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "GOMAXPROCS=4")
	// A new process group: signals to containerd's group must not reach the shim.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, nil
}

type shimSocket struct {
	addr string
	s    *net.UnixListener
	f    *os.File
}

func (s *shimSocket) Close() {
	if s.s != nil {
		s.s.Close()
	}
	if s.f != nil {
		s.f.Close()
	}
	_ = shim.RemoveSocket(s.addr)
}

func newShimSocket(ctx context.Context, root, path, id string, debug bool) (*shimSocket, error) {
	address, err := shim.CreateSocketAddress(ctx, root, path, id, debug)
	if err != nil {
		return nil, err
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
		if !debug && shim.CanConnect(address) {
			return &shimSocket{addr: address}, errdefs.ErrAlreadyExists
		}
		// A dead shim left its socket behind.
		if err := shim.RemoveSocket(address); err != nil {
			return nil, fmt.Errorf("remove stale shim socket: %w", err)
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return nil, fmt.Errorf("create shim socket (second try): %w", err)
		}
	}
	s := &shimSocket{addr: address, s: socket}
	f, err := socket.File()
	if err != nil {
		s.Close()
		return nil, err
	}
	s.f = f
	return s, nil
}

// Stop is the delete action: containerd runs it in the bundle directory after a shim
// died, to remove what the dead shim left and learn the init's exit.
func (manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return shim.StopStatus{}, err
	}
	path := filepath.Join(filepath.Dir(cwd), id)
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return shim.StopStatus{}, err
	}
	runtime, err := runctask.ReadRuntime(path)
	if err != nil && !os.IsNotExist(err) {
		return shim.StopStatus{}, err
	}
	// A container served from the pool has this binary as its runc; it passes
	// everything to the real runc recorded beside it.
	if real, err := os.ReadFile(filepath.Join(path, "warm-runc")); err == nil {
		os.Setenv(wrap.EnvRunc, string(real))
	}
	opts, err := runctask.ReadOptions(path)
	if err != nil {
		return shim.StopStatus{}, err
	}
	root := process.RuncRoot
	systemd := false
	if opts != nil {
		if opts.Root != "" {
			root = opts.Root
		}
		systemd = opts.SystemdCgroup
	}
	r := process.NewRunc(root, path, ns, runtime, systemd)
	if err := oci.DeleteContainer(ctx, r, id); err != nil {
		log.G(ctx).WithError(err).Warn("failed to remove runc container")
	}
	if err := mount.UnmountRecursive(filepath.Join(path, "rootfs"), 0); err != nil {
		log.G(ctx).WithError(err).Warn("failed to clean up rootfs mount")
	}
	if e, err := runctask.ReadExitStatus(path); err == nil {
		return shim.StopStatus{ExitedAt: e.Timestamp, ExitStatus: e.Status, Pid: e.Pid}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("failed to read recorded exit status")
	}
	pid, err := runcC.ReadPidFile(filepath.Join(path, process.InitPidFile))
	if err != nil {
		pid = 0
	}
	return shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(unix.SIGKILL), Pid: pid}, nil
}

// Info answers -info: the runtime's name and version, and runc's features (containerd
// checks them, e.g. for idmapped mounts of user-namespace pods).
func (m manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	info := &types.RuntimeInfo{
		Name:    m.Name(),
		Version: &types.RuntimeVersion{Version: version.Version, Revision: version.Revision},
	}
	v, err := shim.ReadRuntimeOptions[any](optionsR)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("read runtime options: %w", err)
	}
	topts, err := optionsFrom(v)
	if err != nil {
		return nil, err
	}
	if info.Options, err = typeurl.MarshalAnyToProto(topts.runc); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(topts.runc.BinaryName)
	if err != nil {
		return nil, fmt.Errorf("look up runc %q: %w", topts.runc.BinaryName, err)
	}
	feat, err := runcFeatures(ctx, bin)
	if err != nil {
		log.G(ctx).WithError(err).Debug("runc features")
	} else if info.Features, err = typeurl.MarshalAnyToProto(feat); err != nil {
		return nil, err
	}
	return info, nil
}

func runcFeatures(ctx context.Context, bin string) (*features.Features, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "features")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%v: %w (stderr: %q)", cmd.Args, err, stderr.String())
	}
	var f features.Features
	if err := json.Unmarshal(out, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// CloseInheritedListeners marks the listener fds a start action passes (3, and 4 for
// the debug socket) close-on-exec, so that no process the shim runs holds them.
func CloseInheritedListeners() {
	for _, fd := range []int{3, 4} {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			unix.CloseOnExec(fd)
		}
	}
}
