#!/usr/bin/env bash
# Prepares .devcheck/ (ignored by git) for a check on the lent pure cgroup v2 host (no
# network, no Go, no busybox, no iptables there): stripped builds of containerd, ctr, containerd-shim-runc-v2, runc,
# warm's shim, warm-runc and warmctl, the test binaries of ./oci (restore, freeze, adopt,
# thaw, destroy with real runc and CRIU) and ./test (the integration suite and its
# benchmarks on a real containerd), the CRIU prefix with its wrapper, busybox, and
# stand-ins for iptables-restore; packed with xz to fit the 64 MiB a call carries. Then,
# through the device tool:
#   run: bash .devcheck/run.sh      carry: [".devcheck"]
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS=$(./scripts/setup.sh)
make build >/dev/null
grep -qx '/.devcheck/' .git/info/exclude 2>/dev/null || echo '/.devcheck/' >>.git/info/exclude
rm -rf .devcheck && mkdir -p .devcheck/b/bin .devcheck/b/fallback
for t in containerd ctr containerd-shim-runc-v2 runc; do strip -o .devcheck/b/bin/$t "$TOOLS/$t"; done
for t in containerd-shim-warm-v2 warmctl; do strip -o .devcheck/b/bin/$t bin/$t; done
mkdir -p .devcheck/b/libexec/warm
for t in containerd-shim-warm-v2 warm-runc; do strip -o .devcheck/b/libexec/warm/$t libexec/warm/$t; done
go test -c -ldflags='-s -w' -o .devcheck/b/oci.test ./oci/
go test -c -ldflags='-s -w' -o .devcheck/b/test.test ./test/
cp -a "$(dirname "$TOOLS")"/criu-* .devcheck/b/criu
rm -rf .devcheck/b/criu/usr/share .devcheck/b/criu/usr/lib/x86_64-linux-gnu/gconv
cp /bin/busybox .devcheck/b/busybox
install -m 0755 scripts/devcheck/criu-wrapper .devcheck/b/bin/criu
# The suite looks nerdctl up with the rest; its tests need CNI and iptables, which that
# host lacks, and run.sh skips them.
printf '#!/bin/sh\necho "nerdctl is not carried to the device check" >&2\nexit 1\n' >.devcheck/b/bin/nerdctl
chmod 0755 .devcheck/b/bin/nerdctl
install -m 0755 scripts/devcheck/iptables-restore .devcheck/b/fallback/iptables-restore
install -m 0755 scripts/devcheck/iptables-restore .devcheck/b/fallback/ip6tables-restore
tar -C .devcheck -cf - b | xz -6 -T0 >.devcheck/bundle.tar.xz
rm -rf .devcheck/b
install -m 0755 scripts/devcheck/run.sh scripts/devcheck/clean.sh scripts/devcheck/cgmove.sh .devcheck/
du -sh .devcheck
