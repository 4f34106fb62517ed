// Command crisummary compares critest's JUnit reports for two runtime handlers (by default
// runc, the reference, and warm). It prints each handler's summary ("N passed, M failed,
// K skipped"), the specs whose result differs, and the specs failing with both handlers
// with the known environmental reason from the allow-list.
//
// It exits 1 when a spec that passes with the reference does not pass with the candidate,
// or when the reference fails a spec that the allow-list does not name; 2 on bad input.
package main

import (
	"bufio"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// junitSuites is the part of Ginkgo's JUnit report this command reads.
type junitSuites struct {
	Suites []struct {
		Cases []junitCase `xml:"testcase"`
	} `xml:"testsuite"`
}

type junitCase struct {
	Name    string    `xml:"name,attr"`
	Status  string    `xml:"status,attr"`
	Failure *junitMsg `xml:"failure"`
	Error   *junitMsg `xml:"error"`
	Skipped *junitMsg `xml:"skipped"`
}

type junitMsg struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// Results of one spec.
const (
	passed  = "passed"
	failed  = "failed"
	skipped = "skipped"
)

type result struct {
	state   string
	message string
}

// load reads a report into spec name -> result. Ginkgo's suite-level nodes
// ([BeforeSuite], [SynchronizedAfterSuite], ...) count only when they fail.
func load(path string) (map[string]result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var s junitSuites
	if err := xml.NewDecoder(f).Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]result{}
	for _, suite := range s.Suites {
		for _, c := range suite.Cases {
			r := classify(c)
			if strings.HasPrefix(c.Name, "[") && !strings.HasPrefix(c.Name, "[It]") && r.state != failed {
				continue
			}
			out[c.Name] = r
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no test cases", path)
	}
	return out, nil
}

func classify(c junitCase) result {
	switch {
	case c.Failure != nil:
		return result{failed, firstLine(rpcError(c.Failure.Text), c.Failure.Message, c.Failure.Text)}
	case c.Error != nil:
		return result{failed, firstLine(rpcError(c.Error.Text), c.Error.Message, c.Error.Text)}
	case c.Skipped != nil || c.Status == "skipped" || c.Status == "pending":
		msg := ""
		if c.Skipped != nil {
			msg = firstLine(c.Skipped.Message, c.Skipped.Text)
		}
		return result{skipped, msg}
	case c.Status == "" || c.Status == "passed":
		return result{passed, ""}
	default: // interrupted, aborted, panicked, timedout
		return result{failed, c.Status}
	}
}

// rpcError returns the first line of text that carries a gRPC error from the runtime,
// which says more than Ginkgo's "failed to start container".
func rpcError(text string) string {
	for _, l := range strings.Split(text, "\n") {
		if i := strings.Index(l, "rpc error:"); i >= 0 {
			return l[i:]
		}
	}
	return ""
}

func firstLine(ss ...string) string {
	for _, s := range ss {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[:i]
		}
		if len(s) > 300 {
			s = s[:300] + "..."
		}
		return s
	}
	return ""
}

// allowList reads "spec name<TAB>reason" lines; # starts a comment. A name ending in '*'
// matches as a prefix.
func allowList(path string) (map[string]string, error) {
	m := map[string]string{}
	if path == "" {
		return m, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, reason, ok := strings.Cut(line, "\t")
		if !ok || strings.TrimSpace(reason) == "" {
			return nil, fmt.Errorf("%s:%d: want \"spec name<TAB>reason\"", path, n)
		}
		m[strings.TrimSpace(name)] = strings.TrimSpace(reason)
	}
	return m, sc.Err()
}

func allowed(allow map[string]string, spec string) (string, bool) {
	if r, ok := allow[spec]; ok {
		return r, true
	}
	for k, r := range allow {
		if strings.HasSuffix(k, "*") && strings.HasPrefix(spec, strings.TrimSuffix(k, "*")) {
			return r, true
		}
	}
	return "", false
}

func summary(rs map[string]result) string {
	var p, f, s int
	for _, r := range rs {
		switch r.state {
		case passed:
			p++
		case failed:
			f++
		default:
			s++
		}
	}
	return fmt.Sprintf("%d passed, %d failed, %d skipped", p, f, s)
}

func main() {
	refName := flag.String("ref-name", "runc", "name of the reference handler")
	refPath := flag.String("ref", "", "reference JUnit report")
	candName := flag.String("cand-name", "warm", "name of the candidate handler")
	candPath := flag.String("cand", "", "candidate JUnit report (optional: only the reference is checked)")
	allowPath := flag.String("allow", "", "allow-list of specs expected to fail with the reference")
	flag.Parse()
	if *refPath == "" {
		flag.Usage()
		os.Exit(2)
	}
	allow, err := allowList(*allowPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crisummary:", err)
		os.Exit(2)
	}
	ref, err := load(*refPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crisummary:", err)
		os.Exit(2)
	}
	var cand map[string]result
	if *candPath != "" {
		if cand, err = load(*candPath); err != nil {
			fmt.Fprintln(os.Stderr, "crisummary:", err)
			os.Exit(2)
		}
	}
	if report(os.Stdout, *refName, ref, *candName, cand, allow) {
		os.Exit(1)
	}
}

// report prints the comparison and says whether it is a failure.
func report(w io.Writer, refName string, ref map[string]result, candName string, cand map[string]result, allow map[string]string) (bad bool) {
	fmt.Fprintf(w, "critest %-5s: %s\n", refName, summary(ref))
	if cand != nil {
		fmt.Fprintf(w, "critest %-5s: %s\n", candName, summary(cand))
	}

	names := map[string]bool{}
	for n := range ref {
		names[n] = true
	}
	for n := range cand {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)

	var unexpected, both, differ []string
	for _, n := range sorted {
		r, inRef := ref[n]
		if inRef && r.state == failed {
			reason, ok := allowed(allow, n)
			if !ok {
				unexpected = append(unexpected, fmt.Sprintf("  %s\n      %s", n, r.message))
				bad = true
			} else if cand == nil || cand[n].state == failed {
				both = append(both, fmt.Sprintf("  %s\n      environment: %s", n, reason))
			}
		}
		if cand == nil {
			continue
		}
		c, inCand := cand[n]
		if !inRef {
			r = result{state: "absent"}
		}
		if !inCand {
			c = result{state: "absent"}
		}
		if r.state == c.state {
			continue
		}
		line := fmt.Sprintf("  %s\n      %s: %s, %s: %s", n, refName, r.state, candName, c.state)
		if c.message != "" {
			line += "\n      " + candName + ": " + c.message
		} else if r.message != "" {
			line += "\n      " + refName + ": " + r.message
		}
		// A spec that skips itself at run time because containerd lost a race ("spec
		// discrepancy", seen with either handler) says nothing about the runtime.
		if r.state == passed && !(c.state == skipped && strings.Contains(c.message, "spec discrepancy")) {
			bad = true
		} else if r.state == passed {
			line += "\n      (inconclusive: the spec skipped itself on a containerd race; not counted)"
		}
		differ = append(differ, line)
	}
	if cand != nil {
		fmt.Fprintf(w, "specs whose result differs (%s vs %s): %d\n", refName, candName, len(differ))
		for _, l := range differ {
			fmt.Fprintln(w, l)
		}
		fmt.Fprintf(w, "specs failing with both handlers (allow-listed): %d\n", len(both))
	} else {
		fmt.Fprintf(w, "specs failing with %s (allow-listed): %d\n", refName, len(both))
	}
	for _, l := range both {
		fmt.Fprintln(w, l)
	}
	if len(unexpected) > 0 {
		fmt.Fprintf(w, "unexpected %s failures (not in the allow-list): %d\n", refName, len(unexpected))
		for _, l := range unexpected {
			fmt.Fprintln(w, l)
		}
	}
	return bad
}
