#!/bin/bash
# Times cgroup v2 operations that a pool hit makes: a migration (a write to
# cgroup.procs) and a subtree_control write, each of which takes the kernel's
# cgroup_threadgroup_rwsem for writing (an RCU grace period unless cgroup2 is mounted
# with favordynmods). Prints microseconds.
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || { echo "not a pure cgroup v2 host"; exit 1; }
cg=/sys/fs/cgroup/warmdevcheck
mkdir -p $cg
grep -w cgroup2 /proc/mounts
sleep 100 & p=$!
us() { echo $(( (${1/./} - ${2/./}) )); }
for i in 1 2 3 4 5 6; do
	mkdir -p $cg/c$i
	t0=$EPOCHREALTIME; echo $p > $cg/c$i/cgroup.procs; t1=$EPOCHREALTIME
	echo "migrate $(us $t1 $t0) us"
	sleep 0.2
done
for i in 1 2 3; do
	t0=$EPOCHREALTIME; echo "+pids" > $cg/cgroup.subtree_control 2>/dev/null; t1=$EPOCHREALTIME
	echo "subtree_control (unchanged) $(us $t1 $t0) us"
	sleep 0.2
done
for i in 1 2 3; do
	t0=$EPOCHREALTIME; mkdir $cg/m$i; t1=$EPOCHREALTIME
	echo "mkdir $(us $t1 $t0) us"
done
echo $p > /sys/fs/cgroup/cgroup.procs 2>/dev/null || echo $p > $(dirname $cg)/cgroup.procs
kill -9 $p; wait $p 2>/dev/null
sleep 0.1
find $cg -depth -type d -exec rmdir {} \; 2>/dev/null
