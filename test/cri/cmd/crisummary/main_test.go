package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const refXML = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="critest">
<testcase name="[BeforeSuite]" status="passed"></testcase>
<testcase name="[It] a passes" status="passed"></testcase>
<testcase name="[It] b digest" status="failed"><failure message="failed to pull image">x
  rpc error: code = NotFound desc = not found</failure></testcase>
<testcase name="[It] c passes" status="passed"></testcase>
<testcase name="[It] d skipped" status="skipped"><skipped message="skipped - AppArmor is disabled"></skipped></testcase>
</testsuite></testsuites>`

const candXML = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="critest">
<testcase name="[It] a passes" status="passed"></testcase>
<testcase name="[It] b digest" status="failed"><failure message="failed to pull image"></failure></testcase>
<testcase name="[It] c passes" status="failed"><failure message="failed to start container">
  rpc error: code = Unknown desc = boom</failure></testcase>
<testcase name="[It] d skipped" status="skipped"><skipped message="skipped"></skipped></testcase>
</testsuite></testsuites>`

func write(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReport(t *testing.T) {
	ref, err := load(write(t, "ref.xml", refXML))
	if err != nil {
		t.Fatal(err)
	}
	cand, err := load(write(t, "cand.xml", candXML))
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(ref); got != "2 passed, 1 failed, 1 skipped" {
		t.Errorf("ref summary = %q", got)
	}
	allow := map[string]string{"[It] b*": "digest-pinned"}

	var out bytes.Buffer
	if !report(&out, "runc", ref, "warm", cand, allow) {
		t.Errorf("a spec passing with runc and failing with warm must fail the report")
	}
	for _, want := range []string{
		"critest warm : 1 passed, 2 failed, 1 skipped",
		"specs whose result differs (runc vs warm): 1",
		"[It] c passes\n      runc: passed, warm: failed\n      warm: rpc error: code = Unknown desc = boom",
		"environment: digest-pinned",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}

	// The reference alone: the allow-listed failure is fine, an unlisted one is not.
	out.Reset()
	if report(&out, "runc", ref, "", nil, allow) {
		t.Errorf("allow-listed runc failure must not fail the report:\n%s", out.String())
	}
	if !report(&out, "runc", ref, "", nil, nil) {
		t.Errorf("unlisted runc failure must fail the report")
	}
}

func TestAllowListFormat(t *testing.T) {
	if _, err := allowList(write(t, "a.tsv", "# comment\n[It] x\tbecause\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := allowList(write(t, "b.tsv", "[It] x without reason\n")); err == nil {
		t.Fatal("an entry without a reason must be rejected")
	}
}

// A spec that passes with runc and skips itself with warm on a containerd race ("spec
// discrepancy") is listed but does not fail the report.
func TestSpecDiscrepancySkip(t *testing.T) {
	ref := map[string]result{"[It] nri sync": {state: passed}}
	cand := map[string]result{"[It] nri sync": {state: skipped, message: "spec discrepancy: containerd loses containers"}}
	var out bytes.Buffer
	if report(&out, "runc", ref, "warm", cand, nil) {
		t.Fatalf("a self-skip on a containerd race failed the report:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "inconclusive") {
		t.Fatalf("not listed as inconclusive:\n%s", out.String())
	}
	cand["[It] nri sync"] = result{state: skipped, message: "some other reason"}
	out.Reset()
	if !report(&out, "runc", ref, "warm", cand, nil) {
		t.Fatal("a spec passing with runc and skipped with warm for another reason must fail the report")
	}
}
