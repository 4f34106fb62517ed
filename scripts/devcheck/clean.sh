#!/bin/bash
# Remove the cgroups a failed run left (thaw, kill, rmdir).
for d in /sys/fs/cgroup/warmocitest*; do
  [ -d "$d" ] || continue
  find "$d" -name cgroup.freeze -exec sh -c 'echo 0 > "$1"' _ {} \; 2>/dev/null
  for p in $(find "$d" -name cgroup.procs -exec cat {} \; 2>/dev/null); do kill -9 $p 2>/dev/null; done
  sleep 0.3
  find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
done
