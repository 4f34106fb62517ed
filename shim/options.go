package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/warmshim/warm/config"
)

// taskOptions is what the shim needs from a Create's options: its own configuration and
// the runc options handed to containerd's runc packages.
type taskOptions struct {
	cfg config.Config
	// cfgPath is the file cfg was read from ("" when a runtime option carried it:
	// ConfigBody), cfgVersion the version of it that was read.
	cfgPath    string
	cfgVersion config.Version
	runc       *options.Options
}

// parseOptions accepts both option types containerd sends a shim:
// runtimeoptions.v1.Options (ConfigPath/ConfigBody, what a non-runc runtime gets) and
// containerd.runc.v1.Options (what ctr's runc flags and CRI's user-namespace pods send).
func parseOptions(a *anypb.Any) (taskOptions, error) {
	var v any
	if a.GetValue() != nil || a.GetTypeUrl() != "" {
		var err error
		if v, err = typeurl.UnmarshalAny(a); err != nil {
			return taskOptions{}, fmt.Errorf("runtime options of type %q: %w", a.GetTypeUrl(), err)
		}
	}
	return optionsFrom(v)
}

// optionsFrom turns unmarshalled runtime options (nil when there are none) into taskOptions.
func optionsFrom(v any) (taskOptions, error) {
	var (
		cfg     config.Config
		cfgPath = config.Path("")
		cfgVer  config.Version
		ropt    = &options.Options{}
		err     error
	)
	switch o := v.(type) {
	case nil:
		if cfg, cfgVer, err = config.LoadVersion(cfgPath); err != nil {
			return taskOptions{}, err
		}
	case *runtimeoptions.Options:
		switch {
		case o.ConfigBody != nil:
			src := "config_body"
			if o.ConfigPath != "" {
				src = o.ConfigPath
			}
			cfg, err = config.Parse(o.ConfigBody, src)
			cfgPath = ""
		default:
			cfgPath = config.Path(o.ConfigPath)
			cfg, cfgVer, err = config.LoadVersion(cfgPath)
		}
		if err != nil {
			return taskOptions{}, err
		}
	case *options.Options:
		// runc's options carry no path to warm's config: read the default file, then let
		// the explicit runc fields win.
		if cfg, cfgVer, err = config.LoadVersion(cfgPath); err != nil {
			return taskOptions{}, err
		}
		ropt = o
	default:
		return taskOptions{}, fmt.Errorf("runtime options: unsupported type %T; use runtimeoptions.v1.Options (ConfigPath) or containerd.runc.v1.Options", v)
	}
	if ropt.BinaryName == "" {
		ropt.BinaryName = cfg.Runc
	}
	if ropt.Root == "" {
		ropt.Root = cfg.RuncRoot
	}
	if cfg.SystemdCgroup {
		ropt.SystemdCgroup = true
	}
	return taskOptions{cfg: cfg, cfgPath: cfgPath, cfgVersion: cfgVer, runc: ropt}, nil
}

// usePath puts the directory of an absolute binary path first in this process's PATH,
// which is how runc (and go-criu inside it) finds CRIU: runc has no flag for it.
func usePath(bin string) {
	if !filepath.IsAbs(bin) {
		return
	}
	dir := filepath.Dir(bin)
	path := os.Getenv("PATH")
	for _, p := range strings.Split(path, ":") {
		if p == dir {
			return
		}
	}
	os.Setenv("PATH", dir+":"+path)
}
