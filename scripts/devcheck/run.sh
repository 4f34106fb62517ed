#!/bin/bash
D=$(cd "$(dirname "$0")" && pwd)
export PATH=$D/bin:$PATH WARM_BUSYBOX=$D/busybox WARM_INTEGRATION=1
echo "== host"; uname -r; stat -fc %T /sys/fs/cgroup; cat /proc/self/cgroup; cat /sys/fs/cgroup/cgroup.subtree_control
echo "== criu check"; criu check 2>&1 | tail -2
echo "== runc"; runc --version | head -1; ldd $D/bin/runc | grep -i seccomp
echo "== oci tests"; cd $D && ./oci.test -test.v -test.count=1 2>&1 | tail -40
rc=${PIPESTATUS[0]}
mkdir -p $OUT; ./oci.test -test.v -test.count=1 -test.run TestSandboxRestoreAdoptThaw > $OUT/oci-v2.txt 2>&1; echo "second run rc=$?" >> $OUT/oci-v2.txt
ls -d /sys/fs/cgroup/warmoci* 2>/dev/null && echo "LEFTOVER cgroups" || echo "no leftover cgroups"
exit $rc
