#!/usr/bin/env bash
# crictl-smoke.sh sets up the same private containerd, registry and CNI bridge as
# run-critest.sh and runs only the crictl smoke test for handlers runc and warm:
# runp --runtime H, create, start, exec, logs, stop, rm (and pod start to first reply).
#   sudo scripts/cri/crictl-smoke.sh [OUTDIR]
exec env CRITEST_SMOKE_ONLY=1 "$(dirname "$0")/run-critest.sh" "$@"
