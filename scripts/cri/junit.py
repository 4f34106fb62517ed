#!/usr/bin/env python3
"""Small JUnit helpers for run-critest.sh.

  junit.py failed REPORT            print the names of failed test cases, one per line
  junit.py focus NAME               print a ginkgo focus regexp for that test case
  junit.py mark-passed REPORT NAME  drop the failure of test case NAME (it passed on retry)
"""
import re
import sys
import xml.etree.ElementTree as ET


def failed(path):
    for tc in ET.parse(path).getroot().iter("testcase"):
        if tc.find("failure") is not None or tc.find("error") is not None:
            print(tc.get("name"))


def focus(name):
    # A Go (RE2) regexp: escape only its metacharacters (RE2 rejects "\ ").
    text = re.sub(r"^\[It\]\s*", "", name)
    print(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text))


def mark_passed(path, name):
    tree = ET.parse(path)
    root = tree.getroot()
    for tc in root.iter("testcase"):
        if tc.get("name") == name:
            for child in list(tc):
                if child.tag in ("failure", "error"):
                    tc.remove(child)
            tc.set("status", "passed")
    for ts in [root] + list(root.iter("testsuite")):
        if ts.get("failures") is not None:
            n = sum(1 for tc in ts.iter("testcase") if tc.find("failure") is not None)
            ts.set("failures", str(n))
    tree.write(path, encoding="utf-8", xml_declaration=True)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "failed" and len(sys.argv) == 3:
        failed(sys.argv[2])
    elif cmd == "focus" and len(sys.argv) == 3:
        focus(sys.argv[2])
    elif cmd == "mark-passed" and len(sys.argv) == 4:
        mark_passed(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
