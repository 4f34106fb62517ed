#!/usr/bin/env bash
# On a hybrid cgroup host (the controllers on cgroup v1, a cgroup2 hierarchy without them
# at /sys/fs/cgroup/unified, as this project's CI machine), runs warm's tests again in a
# private mount namespace whose /sys/fs/cgroup is that cgroup2 hierarchy, so that runc,
# CRIU, containerd and warm take their cgroup v2 paths: cgroup.freeze (pooled sandboxes,
# the refill gate, recovery's freeze), the eBPF device program of a migrated cgroup,
# sub-cgroups, kills of frozen sandboxes, v2 cgroup paths and leak checks.
#   1. the oci package's tests (restore, freeze, adopt, thaw, kill, destroy with runc and
#      CRIU; the test that sets a memory limit leaves it out: WARM_TEST_HYBRID_V2=1);
#   2. the integration suite on its own containerd, but for the tests that need
#      controllers this hierarchy lacks (memory, pids, cpu: ctr sets cpu shares on every
#      container), listed in NEEDS_CONTROLLERS below; the cgroup v1 run has them.
# This is not a pure cgroup v2 host (scripts/devcheck has that check): resource limits
# are not applied here. Elsewhere the script says why it does nothing. It fails if a test
# fails or leaves a cgroup behind.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
	echo "hybrid-v2-check: /sys/fs/cgroup is cgroup v2 already: the tests ran on it"
	exit 0
fi
if [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" != cgroup2fs ]; then
	echo "hybrid-v2-check: no cgroup2 hierarchy at /sys/fs/cgroup/unified: nothing to check"
	exit 0
fi
# The hierarchy's options as the host mounted it: a new cgroup2 mount applies its own
# options to the whole hierarchy.
OPTS=$(awk '$2 == "/sys/fs/cgroup/unified" && $3 == "cgroup2" { print $4 }' /proc/mounts | tail -1)
[ -n "$OPTS" ] || { echo "hybrid-v2-check: no mount options found for /sys/fs/cgroup/unified"; exit 1; }
export OPTS
NEEDS_CONTROLLERS='^(TestLifecycleClient|TestLifecycleCtr|TestPoolConcurrentCtrRun|TestPoolHitOutputUnread|TestPoolHitOutputComplete|TestPoolHitResources|TestPoolHitUpdateAndCheckpoint)$'
tmp=$(mktemp -d /tmp/warm-hybrid-v2.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
GO=${GO:-go}
"$GO" test -c -o "$tmp/oci.test" ./oci/
"$GO" test -c -o "$tmp/test.test" ./test/
# The test cgroups there before (a pool shim of the host's, runc's v1 driver makes each
# container's cgroup in this hierarchy too): only new ones are leaks.
cgroups() { find /sys/fs/cgroup/unified -maxdepth 1 \( -name 'warmocitest*' -o -name 'warmtest-*' -o -name 'warm-pool' \) 2>/dev/null | sort; }
before=$(cgroups)
rc=0
# run NAME DIR BINARY ARGS...: the test binary in DIR, in the private mount namespace.
run() {
	local name=$1 dir=$2
	shift 2
	echo "== hybrid-v2-check: $name"
	local r=0
	(cd "$dir" && unshare -m --propagation private sh -c 'mount -t cgroup2 -o "$OPTS" cgroup2 /sys/fs/cgroup && exec env WARM_INTEGRATION=1 WARM_TEST_HYBRID_V2=1 "$@"' sh "$@") >"$tmp/$name.log" 2>&1 || r=$?
	grep -E '^(--- |ok|FAIL|PASS)|^    [a-z_0-9]+_test\.go:' "$tmp/$name.log" | grep -v -- '--- SKIP' || true
	if [ "$r" != 0 ]; then
		tail -60 "$tmp/$name.log"
		echo "hybrid-v2-check: $name FAILED (exit $r)"
		rc=1
	fi
}
run oci oci "$tmp/oci.test" -test.count=1 -test.v -test.timeout 20m
run integration test "$tmp/test.test" -test.count=1 -test.v -test.timeout 40m -test.skip "$NEEDS_CONTROLLERS"
left=$(comm -13 <(echo "$before") <(cgroups))
if [ -n "$left" ]; then
	echo "hybrid-v2-check: cgroups left behind: $left"
	rc=1
fi
[ "$rc" = 0 ] || { echo "hybrid-v2-check: FAILED"; exit 1; }
echo "hybrid-v2-check: ok (oci tests and the integration suite on the cgroup2 hierarchy)"
