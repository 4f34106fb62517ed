#!/bin/bash
# The device check (see prepare.sh): on a pure cgroup v2 host, warm's oci package tests,
# the integration suite on a real containerd (nerdctl's CNI tests excepted), and the pool
# hit benchmarks. Each stage has its own limit; every log is copied to $OUT.
D=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/devcheck-out}
mkdir -p "$OUT"
cd "$D"
if [ ! -d b ]; then
	if command -v xz >/dev/null; then tar -xJf bundle.tar.xz
	else python3 -c 'import tarfile; tarfile.open("bundle.tar.xz").extractall(".")'; fi
fi
B=$D/b
# iptables-restore stand-ins only where the host has none (CRIU's network lock needs one).
export PATH=$B/bin:$PATH:$B/fallback WARM_BUSYBOX=$B/busybox WARM_INTEGRATION=1
{
	echo "== host"; uname -r; nproc; stat -fc %T /sys/fs/cgroup; cat /proc/self/cgroup
	cat /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; mount | grep -E ' /(tmp|run) ' || true
	echo "== criu check"; criu check 2>&1 | tail -2
	# Incremental (pre-dump) checkpoints need soft-dirty tracking (issue 5).
	echo "== criu mem_dirty_track"; criu check --feature mem_dirty_track 2>&1 | tail -1
	echo "== runc"; runc --version | head -1
} 2>&1 | tee "$OUT/host.txt"
rc=0
stage() { # name limit args...
	local name=$1 limit=$2; shift 2
	echo "== $name"
	timeout -s KILL "$limit" "$@" >"$OUT/$name.txt" 2>&1
	local r=$?
	echo "$name rc=$r" | tee -a "$OUT/$name.txt"
	grep -E '^(--- |ok|FAIL|PASS|Benchmark)|^    --- FAIL' "$OUT/$name.txt" | tail -80
	[ $r = 0 ] || rc=1
}
# Stages (WARM_DEVCHECK_STAGES, in order): oci, integration, bench-hit, bench-conc, cgmove
# (times of a migration and of a subtree_control write), fdm (remounts cgroup2 with
# favordynmods; the later stages run with it), shimfdm (the later stages' pool shims run
# with cgroup_favordynmods = true and remount it themselves).
STAGES=${WARM_DEVCHECK_STAGES:-oci integration bench-hit bench-conc}
# Pool hits' adoption phases, from the pool shim's log (debug level only).
phases() { grep -h 'sandbox adopted' /tmp/warm-it-pool-shim.log 2>/dev/null | sed 's/.*msg="sandbox adopted" //' | tail -${1:-20} >>"$OUT/$2.txt"; }
n=0
for s in $STAGES; do
	n=$((n + 1))
	case $s in
	oci) stage oci 90 ./b/oci.test -test.v -test.count=1 -test.timeout 80s; bash ./clean.sh ;;
	integration)
		stage integration ${WARM_DEVCHECK_IT_LIMIT:-260} ./b/test.test -test.v -test.count=1 -test.timeout 250s \
			-test.skip 'Nerdctl' ${WARM_DEVCHECK_RUN:+-test.run "$WARM_DEVCHECK_RUN"}
		phases 40 integration
		grep -h favordynmods /tmp/warm-it-pool-shim.log | tail -3 >>"$OUT/integration.txt" ;;
	bench-hit)
		stage bench-hit-$n 60 ./b/test.test -test.run '^$' -test.bench 'PoolHit$' -test.benchtime 50x \
			-test.count=1 -test.timeout 55s
		phases 30 bench-hit-$n
		grep -w cgroup2 /proc/mounts >>"$OUT/bench-hit-$n.txt"
		grep -h favordynmods /tmp/warm-it-pool-shim.log | tail -3 >>"$OUT/bench-hit-$n.txt" ;;
	bench-conc)
		stage bench-conc-$n ${WARM_DEVCHECK_BENCH_LIMIT:-150} env -u WARM_TEST_LOG_LEVEL ./b/test.test -test.run '^$' -test.bench 'PoolHitConcurrent' \
			-test.benchtime 5x -test.count=1 -test.timeout 140s ;;
	cgmove) stage cgmove-$n 30 bash ./cgmove.sh ;;
	mounts) echo "mounts at stage $n: $(grep -w cgroup2 /proc/mounts)" | tee -a "$OUT/host.txt" ;;
	shimfdm) export WARM_TEST_CGROUP_FAVORDYNMODS=1 ;; # the pool shim remounts (cgroup_favordynmods)
	fdm) echo "== fdm"; mount -o remount,favordynmods /sys/fs/cgroup && grep -w cgroup2 /proc/mounts | tee -a "$OUT/host.txt" ;;
	esac
done
echo "== leftovers"
pgrep -fa 'criu|containerd|runc' | grep -v pgrep || echo "no processes left"
ls -d /sys/fs/cgroup/warm*/ /tmp/warm-it-*/ 2>/dev/null && echo "LEFTOVERS" || echo "no cgroups or suite dirs left"
exit $rc
