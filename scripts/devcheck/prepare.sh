#!/usr/bin/env bash
# Prepares .devcheck/ (ignored by git) for a check on the lent pure cgroup v2 host:
# the oci package's test binary (restore, freeze, adopt, thaw, destroy with real runc and
# CRIU), runc, the CRIU prefix with its wrapper, busybox and stand-ins for
# iptables-restore (that host has none). Then, through the device tool:
#   run: bash .devcheck/run.sh      carry: [".devcheck"]
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS=$(./scripts/setup.sh)
grep -qx '/.devcheck/' .git/info/exclude 2>/dev/null || echo '/.devcheck/' >>.git/info/exclude
rm -rf .devcheck && mkdir -p .devcheck/bin
go test -c -ldflags='-s -w' -o .devcheck/oci.test ./oci/
cp "$TOOLS/runc" .devcheck/bin/runc
cp -a "$(dirname "$TOOLS")"/criu-* .devcheck/criu
rm -rf .devcheck/criu/usr/share .devcheck/criu/usr/lib/x86_64-linux-gnu/gconv
cp /bin/busybox .devcheck/busybox
install -m 0755 scripts/devcheck/criu-wrapper .devcheck/bin/criu
install -m 0755 scripts/devcheck/iptables-restore .devcheck/bin/iptables-restore
install -m 0755 scripts/devcheck/iptables-restore .devcheck/bin/ip6tables-restore
install -m 0755 scripts/devcheck/run.sh scripts/devcheck/clean.sh .devcheck/
du -sh .devcheck
