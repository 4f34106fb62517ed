// Package oci holds warm's dealings with OCI bundles, runc, CRIU and cgroups.
package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ReadSpec reads the OCI spec (config.json) of the bundle at dir.
func ReadSpec(dir string) (*specs.Spec, error) {
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, "config.json"), err)
	}
	return &s, nil
}

// ReadAnnotations reads only the annotations of the bundle's spec at dir: much cheaper
// than ReadSpec in a fresh process (no reflection over the whole spec type), which is
// what every cold Create and every start action pays.
func ReadAnnotations(dir string) (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	var s struct {
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, "config.json"), err)
	}
	return s.Annotations, nil
}
