#!/usr/bin/env bash
# run-critest.sh runs the CRI conformance suite (critest v1.37.0) offline against a
# private containerd v2.4.2 with two CRI runtime handlers, `runc` (io.containerd.runc.v2)
# and `warm` (io.containerd.warm.v2), and compares the results.
#
#   sudo scripts/cri/run-critest.sh [OUTDIR]      (OUTDIR defaults to $OUT or out/critest)
#
# Everything lives in a temporary directory under /tmp and is torn down at exit, even on
# failure: a local registry (Debian's docker-registry on 127.0.0.1, free port) holding
# stand-in images built from Debian binaries (test/cri/cmd/mkimages), hosts.toml mirrors
# sending registry.k8s.io, gcr.io, k8s.gcr.io, docker.io and quay.io to it, a CNI bridge
# (warmcri0, 10.238.0.0/16), and containerd with CRI and NRI, its own root, state, sockets,
# shim socket dir and runc roots. No traffic leaves loopback and the bridge.
# Before critest, a crictl smoke test (runp --runtime H, create, start, exec, logs, stop,
# rm) runs for both handlers and prints pod start to first reply.
#
# The warm handler has no `options` table: the shim finds warm.toml through WARM_CONFIG in
# the shim manager's env. With ConfigPath in the handler's options (CRITEST_WARM_CONFIG=
# configpath) containerd fails user-namespace containers before reaching the shim; see the
# comment at WARM_OPTIONS below.
#
# Environment: CRITEST_HANDLERS (default "runc warm"; the first is the reference),
# CRITEST_FOCUS / CRITEST_SKIP (extra ginkgo regexps), CRITEST_PARALLEL (default 1),
# CRITEST_WARM_CONFIG (env | configpath), CRITEST_SMOKE_ONLY=1 (what crictl-smoke.sh sets),
# CRITEST_KEEP=1 keeps the temp dir (its logs are copied into OUTDIR/logs either way).
#
# Exit status: 0 when every spec that passes with runc passes with warm and runc has no
# failure outside scripts/cri/runc-allowlist.tsv; 1 otherwise; 2 when the set-up fails.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/../.." && pwd)
TOOLS=${WARM_TOOLS:-/var/cache/warm-tools}
OUTDIR=${1:-${OUT:-out/critest}}
HANDLERS=${CRITEST_HANDLERS:-runc warm}
PARALLEL=${CRITEST_PARALLEL:-1}
BRIDGE=warmcri0
SUBNET=10.238.0.0/16
GATEWAY=10.238.0.1
CNINET=warmcri
NS=k8s.io

log() { printf '[critest] %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
export PATH=$HERE/bin:$TOOLS/bin:/usr/sbin:/sbin:$PATH
export GOFLAGS=${GOFLAGS:--buildvcs=false}

for t in containerd runc critest crictl; do
	command -v "$t" >/dev/null || die "$t not in PATH: run WARM_SETUP_CRITEST=1 scripts/setup.sh"
done
[ -x /usr/bin/docker-registry ] || die "/usr/bin/docker-registry missing: run scripts/setup.sh"
[ -d /usr/lib/cni ] || die "/usr/lib/cni missing: run scripts/setup.sh (containernetworking-plugins)"
command -v ipcmk >/dev/null || die "ipcmk (util-linux) missing: critest's HostIpc specs need it"

# Debian's dynamic busybox: the .deb is cached next to the tools (the one download this
# script may do, from Debian's archive, when the cache is empty).
DEBS=$TOOLS/debs
bbdeb=$(ls "$DEBS"/busybox_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$bbdeb" ]; then
	log "fetching Debian's busybox .deb into $DEBS"
	mkdir -p "$DEBS"
	(cd "$DEBS" && apt-get download busybox >&2)
	bbdeb=$(ls "$DEBS"/busybox_*.deb | head -n1)
fi

# --- state and teardown -----------------------------------------------------------
T=$(mktemp -d /tmp/wcri.XXXXXX)
chmod 0755 "$T"
REG_PID= CTD_PID= CRITEST_PID=
ipfwd=$(cat /proc/sys/net/ipv4/ip_forward)
nat_before=$(iptables -t nat -S 2>/dev/null | awk '$1 == "-N" {print $2}' | sort || true)
filter_before=$(iptables -S 2>/dev/null | awk '$1 == "-N" {print $2}' | sort || true)

stop_pid() { # pid name
	local pid=$1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
	log "$2 did not stop on SIGTERM; SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# Removes what a pod left when containerd could not (a failed run): runc containers under
# our runc roots, shims that name our temp dir, mounts and network namespaces under it.
sweep() {
	local root id pid
	for root in "$T/runc-root" "$T/warm-runc-root"; do
		[ -d "$root" ] || continue
		for id in $(runc --root "$root/$NS" list -q 2>/dev/null); do
			runc --root "$root/$NS" kill "$id" KILL 2>/dev/null || true
			runc --root "$root/$NS" delete -f "$id" 2>/dev/null || true
		done
	done
	for pid in $(pgrep -f "containerd-shim.*$T" 2>/dev/null || true); do
		kill -KILL "$pid" 2>/dev/null || true
	done
	# Deepest mounts first.
	awk -v t="$T" '$5 == t || index($5, t "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
}

cleanup_iptables() {
	# Per-pod chains of our network (name "warmcri" in their comments).
	local t rule chain
	for t in nat filter; do
		iptables -t "$t" -S 2>/dev/null | grep -F "name: \\\"$CNINET\\\"" | while read -r rule; do
			# shellcheck disable=SC2086
			eval "iptables -t $t ${rule/-A /-D }" 2>/dev/null || true
		done
	done
	# Chains created by our run (absent before) that are now empty of pod rules.
	local now
	now=$(iptables -t nat -S 2>/dev/null | awk '$1 == "-N" {print $2}' | sort || true)
	for chain in $(comm -13 <(echo "$nat_before") <(echo "$now")); do
		case "$chain" in
		CNI-HOSTPORT-DNAT)
			if iptables -t nat -S CNI-HOSTPORT-DNAT | grep -q -- '-j CNI-DN-'; then continue; fi ;;
		CNI-HOSTPORT-SETMARK | CNI-HOSTPORT-MASQ | CNI-DN-* | CNI-*) ;;
		*) continue ;;
		esac
		iptables -t nat -S 2>/dev/null | grep -- "-j $chain\$" | while read -r rule; do
			eval "iptables -t nat ${rule/-A /-D }" 2>/dev/null || true
		done
	done
	for chain in $(comm -13 <(echo "$nat_before") <(echo "$now")); do
		case "$chain" in CNI-*)
			iptables -t nat -F "$chain" 2>/dev/null && iptables -t nat -X "$chain" 2>/dev/null || true ;;
		esac
	done
	now=$(iptables -S 2>/dev/null | awk '$1 == "-N" {print $2}' | sort || true)
	for chain in $(comm -13 <(echo "$filter_before") <(echo "$now")); do
		case "$chain" in CNI-*)
			iptables -S 2>/dev/null | grep -- "-j $chain\$" | while read -r rule; do
				eval "iptables ${rule/-A /-D }" 2>/dev/null || true
			done
			iptables -F "$chain" 2>/dev/null && iptables -X "$chain" 2>/dev/null || true ;;
		esac
	done
}

remove_cgroups() {
	# containerd's CRI puts pods under /k8s.io/<id> (cgroupfs driver) only if critest asks
	# for a parent; critest's pods use the default, so only leftovers of a crash remain.
	local d
	for d in /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/k8s.io; do
		[ -d "$d" ] || continue
		find "$d" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
		rmdir "$d" 2>/dev/null || true
	done
}

teardown() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	log "teardown"
	stop_pid "$CRITEST_PID" critest
	if [ -n "$CTD_PID" ] && kill -0 "$CTD_PID" 2>/dev/null; then
		# Remove whatever pods are left so the CNI DEL runs while containerd is up.
		local p
		for p in $(crictl --config "$T/crictl.yaml" pods -q 2>/dev/null); do
			crictl --config "$T/crictl.yaml" stopp "$p" >/dev/null 2>&1
			crictl --config "$T/crictl.yaml" rmp -f "$p" >/dev/null 2>&1
		done
	fi
	stop_pid "$CTD_PID" containerd
	sweep
	stop_pid "$REG_PID" docker-registry
	mkdir -p "$OUTDIR/logs"
	cp -f "$T"/*.log "$T"/config.toml "$OUTDIR/logs/" 2>/dev/null
	ip link del "$BRIDGE" 2>/dev/null
	cleanup_iptables
	echo "$ipfwd" >/proc/sys/net/ipv4/ip_forward
	remove_cgroups
	sweep
	if [ "${CRITEST_KEEP:-0}" = 1 ]; then
		log "kept $T"
	else
		rm -rf "$T" 2>/dev/null || { sleep 1; sweep; rm -rf "$T"; }
	fi
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

freeport() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- build ----------------------------------------------------------------------
log "building the shim and the helpers"
(cd "$HERE" && make build >/dev/null &&
	CGO_ENABLED=0 go build -o "$T/bin/pause" ./test/cri/cmd/pause &&
	CGO_ENABLED=0 go build -o "$T/bin/nnp" ./test/cri/cmd/nnp &&
	go build -o "$T/bin/" ./test/cri/cmd/mkimages ./test/cri/cmd/crisummary ./test/cri/cmd/criufault ./cmd/warmctl) || die "build failed"
GOSERVICE=()
if [ "${CRITEST_BENCH:-0}" -gt 0 ]; then
	(cd "$HERE" && CGO_ENABLED=0 go build -trimpath -ldflags=-s\ -w -o "$T/bin/goservice" ./test/apps/goservice) || die "build goservice failed"
	GOSERVICE=(-goservice "$T/bin/goservice")
fi
mkdir -p "$T/busybox"
dpkg -x "$bbdeb" "$T/busybox"

# --- registry with the stand-in images -------------------------------------------
REG_PORT=$(freeport)
mkdir -p "$T/registry"
cat >"$T/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $T/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
EOF
/usr/bin/docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 1 100); do
	curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && break
	kill -0 "$REG_PID" 2>/dev/null || die "docker-registry exited: $(tail -5 "$T/registry.log")"
	sleep 0.1
done
log "registry on 127.0.0.1:$REG_PORT; pushing stand-in images"
"$T/bin/mkimages" -registry "127.0.0.1:$REG_PORT" -busybox "$T/busybox/bin/busybox" \
	-pause "$T/bin/pause" -nnp "$T/bin/nnp" "${GOSERVICE[@]}" >"$T/images.log" || die "mkimages failed: $(cat "$T/images.log")"
grep '^cannot reproduce' "$T/images.log" | sed 's/^/[critest] /' >&2

for host in registry.k8s.io gcr.io k8s.gcr.io docker.io registry-1.docker.io quay.io; do
	mkdir -p "$T/certs.d/$host"
	printf 'server = "http://127.0.0.1:%s"\n' "$REG_PORT" >"$T/certs.d/$host/hosts.toml"
done

# --- CNI bridge ---------------------------------------------------------------------
ip link del "$BRIDGE" 2>/dev/null || true
ip link add "$BRIDGE" type bridge
ip addr add "$GATEWAY/16" dev "$BRIDGE"
ip link set "$BRIDGE" up
mkdir -p "$T/cni/conf" "$T/cni/ipam"
cat >"$T/cni/conf/10-$CNINET.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNINET",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$T/cni/ipam",
        "ranges": [[{"subnet": "$SUBNET", "gateway": "$GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# --- containerd with CRI, NRI and both handlers ---------------------------------------
RUNC=$(command -v runc)
cat >"$T/warm.toml" <<EOF
runc = "$RUNC"
runc_root = "$T/warm-runc-root"
state_dir = "$T/warm-state"
run_dir = "$T/warm-run"
criu = "criu"
log_level = "debug"
EOF
# How the warm handler finds warm.toml. CRI gives a non-runc runtime its handler options
# as runtimeoptions.v1.Options; for a container in a user-namespace pod containerd's client
# (WithUIDOwner/WithGIDOwner in client/task_opts_unix.go) must convert the container's
# options to runc's type and fails ("can't unmarshal type runtimeoptions.v1.Options to
# output containerd.runc.v1.Options") before the shim is reached. So by default the handler
# has no options and the shim reads $WARM_CONFIG (set in the shim manager's env);
# CRITEST_WARM_CONFIG=configpath uses the ConfigPath option instead, to show the difference.
WARM_OPTIONS=
case "${CRITEST_WARM_CONFIG:-env}" in
env) ;;
configpath)
	WARM_OPTIONS="      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.warm.options]
        ConfigPath = \"$T/warm.toml\"" ;;
*) die "CRITEST_WARM_CONFIG must be env or configpath" ;;
esac
cat >"$T/config.toml" <<EOF
version = 3
root = "$T/root"
state = "$T/state"
[grpc]
  address = "$T/c.sock"
[ttrpc]
  address = "$T/c.sock.ttrpc"
[debug]
  level = "info"
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = "$T/s"
  env = ["WARM_CONFIG=$T/warm.toml"]
[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = "$T/nri.sock"
  plugin_path = "$T/nri/plugins"
  plugin_config_path = "$T/nri/conf"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins.'io.containerd.cri.v1.images']
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$T/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$T/cni/conf"
    max_conf_num = 1
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$RUNC"
        Root = "$T/runc-root"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.warm]
      runtime_type = "io.containerd.warm.v2"
      pod_annotations = ["io.containerd.warm.*", "io.containerd.warm.*/*"]
      container_annotations = ["io.containerd.warm.*", "io.containerd.warm.*/*"]
$WARM_OPTIONS
EOF
mkdir -p "$T/nri/plugins" "$T/nri/conf"
# Where the host's hardware breakpoints do not fire, every CRIU dump waits forever unless
# CRIU_FAULT=130 (internal/hwbreak): warm's start action sets it for its shim; runc's
# shim gets it from containerd's environment.
fault=$("$T/bin/criufault") || die "criufault failed"
if [ -n "$fault" ]; then
	export "${fault?}"
	log "hardware breakpoints do not fire on this host: containerd runs with $fault"
fi
log "starting containerd ($T/config.toml)"
containerd --config "$T/config.toml" >"$T/containerd.log" 2>&1 &
CTD_PID=$!
printf 'runtime-endpoint: unix://%s/c.sock\nimage-endpoint: unix://%s/c.sock\ntimeout: 60\n' "$T" "$T" >"$T/crictl.yaml"
CRICTL=(crictl --config "$T/crictl.yaml")
WARMCTL=("$T/bin/warmctl" -n "$NS" -run-dir "$T/warm-run" -state-dir "$T/warm-state")
ready=
for _ in $(seq 1 300); do
	kill -0 "$CTD_PID" 2>/dev/null || die "containerd exited: $(tail -20 "$T/containerd.log")"
	if "${CRICTL[@]}" info >"$T/cri-info.json" 2>/dev/null; then ready=1; break; fi
	sleep 0.2
done
[ -n "$ready" ] || die "CRI not ready: $(tail -20 "$T/containerd.log")"
# The sandbox image, pulled once up front.
"${CRICTL[@]}" pull registry.k8s.io/pause:3.10.2 >/dev/null || die "pull pause: $(tail -5 "$T/containerd.log")"

# --- crictl smoke test per handler -------------------------------------------------------
# runp --runtime H, create, start, exec, logs, stop, rm; checks that handler warm really
# runs containerd-shim-warm-v2 (one shim for the pod) and prints pod start to first reply.
smoke() { # handler
	local h=$1 pod ctr out t0 t1 shims
	mkdir -p "$T/smoke-$h"
	cat >"$T/smoke-$h/pod.json" <<EOF
{"metadata": {"name": "smoke-$h", "namespace": "warm-smoke", "uid": "smoke-$h-uid", "attempt": 0},
 "log_directory": "$T/smoke-$h", "linux": {}}
EOF
	cat >"$T/smoke-$h/ctr.json" <<EOF
{"metadata": {"name": "app"}, "image": {"image": "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
 "command": ["sh", "-c", "echo hello-from-$h; exec sleep 3600"], "log_path": "app.log", "linux": {}}
EOF
	t0=$(date +%s%N)
	pod=$("${CRICTL[@]}" runp --runtime "$h" "$T/smoke-$h/pod.json" 2>>"$T/smoke-$h/crictl.err") || return 1
	ctr=$("${CRICTL[@]}" create "$pod" "$T/smoke-$h/ctr.json" "$T/smoke-$h/pod.json" 2>>"$T/smoke-$h/crictl.err") || return 1
	"${CRICTL[@]}" start "$ctr" >/dev/null || return 1
	out=$("${CRICTL[@]}" exec "$ctr" echo exec-ok) || return 1
	t1=$(date +%s%N)
	[ "$out" = exec-ok ] || { log "smoke $h: exec said '$out'"; return 1; }
	shims=$(pgrep -fc "containerd-shim-warm-v2 .*-address $T/c.sock" || true)
	if [ "$h" = warm ] && [ "$shims" != 1 ]; then
		log "smoke $h: want exactly 1 containerd-shim-warm-v2 for the pod, found $shims"
		return 1
	fi
	for _ in $(seq 1 50); do
		"${CRICTL[@]}" logs "$ctr" 2>/dev/null | grep -q "hello-from-$h" && break
		sleep 0.1
	done
	"${CRICTL[@]}" logs "$ctr" 2>/dev/null | grep -q "hello-from-$h" || { log "smoke $h: no log line"; return 1; }
	"${CRICTL[@]}" stop -t 2 "$ctr" >/dev/null || return 1
	"${CRICTL[@]}" rm "$ctr" >/dev/null || return 1
	"${CRICTL[@]}" stopp "$pod" >/dev/null || return 1
	"${CRICTL[@]}" rmp "$pod" >/dev/null || return 1
	for _ in $(seq 1 50); do
		[ "$(pgrep -fc "containerd-shim-.*-address $T/c.sock" || true)" = 0 ] && break
		sleep 0.1
	done
	[ "$(pgrep -fc "containerd-shim-.*-address $T/c.sock" || true)" = 0 ] || { log "smoke $h: shim still running after rmp"; return 1; }
	printf 'crictl smoke %-5s: ok (runp+create+start+exec, pod start to first reply: %d ms)\n' "$h" $(((t1 - t0) / 1000000)) | tee -a "${SMOKE_OUT:-$OUTDIR/smoke.txt}"
}
"${CRICTL[@]}" pull registry.k8s.io/e2e-test-images/busybox:1.29-2 >/dev/null || die "pull busybox failed"
if [ "${CRITEST_BENCH:-0}" -gt 0 ]; then
	"${CRICTL[@]}" pull registry.k8s.io/warm-test/goservice:1 >/dev/null || die "pull goservice failed"
fi
: >"$OUTDIR/smoke.txt"
: >"$OUTDIR/flaky.txt"
smoke_rc=0
for h in runc warm; do
	smoke "$h" || { log "crictl smoke test failed for handler $h"; smoke_rc=1; }
done
# pod_json FILE NAME HOSTNAME LOGDIR ANNOTATIONS: a pod sandbox config as Kubernetes
# makes one: network, IPC and UTS shared by the pod, a PID namespace per container (crictl's
# default would share the pod's).
pod_json() {
	cat >"$1" <<EOF
{"metadata": {"name": "$2", "namespace": "warm-smoke", "uid": "$2-uid", "attempt": 0},
 "hostname": "$3", "log_directory": "$4", "annotations": {$5},
 "linux": {"security_context": {"namespace_options": {"pid": 1}}}}
EOF
}

# gopod HANDLER LABEL ANNOTATIONS: a pod with the sample Go service (1 s, 200 MB of
# initialisation, then a line every 5 ms); appends "gopod LABEL MS STATE PHASES" to
# bench.txt: runp to its first line in the pod's log, the state it reports, and the time
# of runp, create and start.
gopod() {
	local h=$1 label=$2 ann=$3 d pod ctr t0 t1 tp tc ts line
	d=$(mktemp -d "$T/gopod.XXXXXX")
	pod_json "$d/pod.json" "gopod-${d##*.}" gopod "$d" "$ann"
	cat >"$d/ctr.json" <<EOF
{"metadata": {"name": "app"}, "image": {"image": "registry.k8s.io/warm-test/goservice:1"}, "log_path": "app.log",
 "linux": {"security_context": {"namespace_options": {"pid": 1}}}}
EOF
	t0=$(date +%s%N)
	pod=$("${CRICTL[@]}" runp --runtime "$h" "$d/pod.json" 2>>"$d/crictl.err") || return 1
	tp=$(date +%s%N)
	ctr=$("${CRICTL[@]}" create "$pod" "$d/ctr.json" "$d/pod.json" 2>>"$d/crictl.err") || return 1
	tc=$(date +%s%N)
	"${CRICTL[@]}" start "$ctr" >/dev/null 2>>"$d/crictl.err" || return 1
	ts=$(date +%s%N)
	for _ in $(seq 1 3000); do
		grep -q ' tick ' "$d/app.log" 2>/dev/null && break
		sleep 0.002
	done
	t1=$(date +%s%N)
	line=$(grep -m1 ' tick ' "$d/app.log") || { log "gopod $label: no output: $(tail -3 "$d/crictl.err")"; return 1; }
	line=${line##*state=}
	echo "gopod $label $(((t1 - t0) / 1000000)) ${line%% *} runp=$(((tp - t0) / 1000000)) create=$(((tc - tp) / 1000000)) start=$(((ts - tc) / 1000000))" >>"$T/bench.txt"
	if [ "$label" = maker ]; then
		for _ in $(seq 1 300); do
			"${WARMCTL[@]}" template ls 2>/dev/null | grep -q '^gotmpl ' && break
			sleep 0.1
		done
	fi
	{ "${CRICTL[@]}" stop -t 1 "$ctr" && "${CRICTL[@]}" rm "$ctr" && "${CRICTL[@]}" stopp "$pod" && "${CRICTL[@]}" rmp "$pod"; } >/dev/null 2>>"$d/crictl.err"
}
# Benchmark row: pod start to first reply, CRITEST_BENCH runs per handler, interleaved.
if [ "${CRITEST_BENCH:-0}" -gt 0 ] && [ "$smoke_rc" = 0 ]; then
	: >"$T/bench.txt"
	for _ in $(seq 1 "$CRITEST_BENCH"); do
		for h in runc warm; do
			SMOKE_OUT=$T/bench.txt smoke "$h" >/dev/null || { log "bench run failed for $h"; smoke_rc=1; break 2; }
		done
	done
	# The Go service in a pod: runc cold, and warm restored from a template made in a
	# pod (pod annotations for container "app"), interleaved.
	gopod warm maker '"io.containerd.warm.template/app": "gotmpl", "io.containerd.warm.ready/app": "file:/tmp/ready"' ||
		{ log "bench: template pod failed"; smoke_rc=1; }
	for _ in $(seq 1 "$CRITEST_BENCH"); do
		gopod runc runc-cold '' && gopod warm warm-restore '"io.containerd.warm.template/app": "gotmpl"' ||
			{ log "bench: go pod run failed"; smoke_rc=1; break; }
	done
	# Every restored pod must report the template's state (not its own initialisation).
	want=$(awk '$2 == "maker" {print $4}' "$T/bench.txt")
	if awk -v w="$want" '$1 == "gopod" && $2 == "warm-restore" && $4 != w' "$T/bench.txt" | grep -q .; then
		log "bench: a restored go pod did not continue from the template (state $want)"; smoke_rc=1
	fi
	"${WARMCTL[@]}" template rm gotmpl >/dev/null 2>&1 || true
	cp "$T/bench.txt" "$OUTDIR/bench-raw.txt"
	{
		printf '%-40s %-12s %5s %9s %9s %9s\n' "benchmark" "handler" "runs" "median" "p90" "p99"
		for h in runc warm; do
			grep "crictl smoke $h " "$T/bench.txt" | sed 's/.*first reply: \([0-9]*\) ms.*/\1/' | sort -n | awk -v h="$h" '
				function rank(p) { i = int(p / 100 * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; return v[i] }
				{ v[NR] = $1 }
				END { printf "%-40s %-12s %5d %7dms %7dms %7dms\n", "pod start to first reply (crictl)", h, NR, rank(50), rank(90), rank(99) }'
		done
		for m in runc-cold warm-restore; do
			awk -v m="$m" '$1 == "gopod" && $2 == m {print $3}' "$T/bench.txt" | sort -n | awk -v m="$m" '
				function rank(p) { i = int(p / 100 * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; return v[i] }
				{ v[NR] = $1 }
				END { if (NR) printf "%-40s %-12s %5d %7dms %7dms %7dms\n", "go service pod to first output (crictl)", m, NR, rank(50), rank(90), rank(99) }'
		done
	} | tee "$OUTDIR/bench.txt"
fi
# --- a template made in a pod serves other pods' containers (restore on create) -----------
# Pod a's container makes template "podtok" (readiness file), as a Kubernetes Pod asks:
# pod annotations io.containerd.warm.template/app and .ready/app, which reach the pause
# container too (it must ignore them) and are meant for container "app". The
# containers of pods b and c name it: each is restored from its checkpoint into its own
# pod's namespaces, by its pod's shim. Shown: their log carries pod a's token (process
# memory, not the image), their init is in their own pod's network namespace, exec works,
# no pool shim starts and nothing is restored ahead, and nothing is left once the pods
# and the template (warmctl, straight from the store) go.
declare -A PT_PODS PT_CTRS
pt_start() { # p
	PT_PODS[$1]=$("${CRICTL[@]}" runp --runtime warm "$T/podtmpl/pod-$1.json" 2>>"$T/podtmpl/crictl.err") || return 1
	PT_CTRS[$1]=$("${CRICTL[@]}" create "${PT_PODS[$1]}" "$T/podtmpl/ctr-$1.json" "$T/podtmpl/pod-$1.json" 2>>"$T/podtmpl/crictl.err") || return 1
	"${CRICTL[@]}" start "${PT_CTRS[$1]}" >/dev/null 2>>"$T/podtmpl/crictl.err"
}
pt_token() { # p: the first token line of the container's log
	local i
	for i in $(seq 1 100); do
		"${CRICTL[@]}" logs "${PT_CTRS[$1]}" 2>/dev/null | grep -m1 -o 'tok=.*' && return 0
		sleep 0.1
	done
	return 1
}
pod_template() {
	local d=$T/podtmpl p ann tok want netns pid
	mkdir -p "$d"
	for p in a b c; do
		mkdir -p "$d/$p"
		ann='"io.containerd.warm.template/app": "podtok"'
		[ "$p" = a ] && ann="$ann, \"io.containerd.warm.ready/app\": \"file:/tmp/ready\""
		pod_json "$d/pod-$p.json" "tmpl-$p" tmpl "$d/$p" "$ann"
		cat >"$d/ctr-$p.json" <<EOF
{"metadata": {"name": "app"}, "image": {"image": "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
 "command": ["sh", "-c", "tok=\$(cat /proc/sys/kernel/random/uuid); touch /tmp/ready; while :; do echo tok=\$tok; sleep 0.2; done"],
 "log_path": "app.log",
 "linux": {"security_context": {"namespace_options": {"pid": 1}}}}
EOF
	done
	pt_start a || { log "pod template: pod a: $(tail -3 "$d/crictl.err")"; return 1; }
	want=$(pt_token a) || { log "pod template: no token from pod a"; return 1; }
	for _ in $(seq 1 100); do
		"${WARMCTL[@]}" template ls 2>/dev/null | grep -q '^podtok ' && break
		sleep 0.1
	done
	"${WARMCTL[@]}" template ls 2>/dev/null | grep -q '^podtok ' || { log "pod template: no template podtok (see $T/warm-run/$NS/pool-shim.log)"; return 1; }
	# Made from container "app", not from the pause container that got the same annotations.
	[ "$("${WARMCTL[@]}" -json template ls | python3 -c 'import json,sys; print([t["spec"]["process"]["args"][0] for t in json.load(sys.stdin) if t["name"] == "podtok"][0])')" = sh ] ||
		{ log "pod template: podtok was not made from container app: $("${WARMCTL[@]}" -json template ls | cut -c1-300)"; return 1; }
	for p in b c; do
		pt_start "$p" || { log "pod template: pod $p: $(tail -3 "$d/crictl.err")"; return 1; }
		tok=$(pt_token "$p") || { log "pod template: no output from pod $p"; return 1; }
		[ "$tok" = "$want" ] || { log "pod template: pod $p printed $tok, the template's was $want: not restored from the template"; return 1; }
		netns=$("${CRICTL[@]}" inspectp "${PT_PODS[$p]}" | python3 -c 'import json,sys; print([n["path"] for n in json.load(sys.stdin)["info"]["runtimeSpec"]["linux"]["namespaces"] if n["type"] == "network"][0])')
		pid=$("${CRICTL[@]}" inspect "${PT_CTRS[$p]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["pid"])')
		[ "$(readlink "/proc/$pid/ns/net")" = "net:[$(stat -L -c %i "$netns")]" ] || { log "pod template: pod $p's container (pid $pid) is in $(readlink "/proc/$pid/ns/net"), its pod's netns $netns is net:[$(stat -L -c %i "$netns")]"; return 1; }
		[ "$("${CRICTL[@]}" exec "${PT_CTRS[$p]}" echo exec-ok)" = exec-ok ] || { log "pod template: exec in pod $p failed"; return 1; }
	done
	# Each pod's shim served its container; no pool shim was started, nothing restored ahead.
	[ ! -e "$T/warm-run/$NS/ctl.sock" ] && [ -z "$(ls -A "$T/warm-run/$NS/sandboxes" 2>/dev/null)" ] || { log "pod template: a pool shim or pooled sandbox appeared: $(ls -R "$T/warm-run")"; return 1; }
	[ "$(grep 'restore on create' "$T/containerd.log" | grep -c 'template=podtok')" = 2 ] || { log "pod template: want 2 restores on create in containerd.log: $(grep 'podtok' "$T/containerd.log" | cut -c1-300 | tail -5)"; return 1; }
	for p in a b c; do
		{ "${CRICTL[@]}" stop -t 2 "${PT_CTRS[$p]}" && "${CRICTL[@]}" rm "${PT_CTRS[$p]}" &&
			"${CRICTL[@]}" stopp "${PT_PODS[$p]}" && "${CRICTL[@]}" rmp "${PT_PODS[$p]}"; } >/dev/null || { log "pod template: removing pod $p failed"; return 1; }
	done
	"${WARMCTL[@]}" template rm podtok || { log "pod template: template rm failed"; return 1; }
	[ -z "$(ls -A "$T/warm-state/templates/$NS")" ] || { log "pod template: template files left: $(ls -A "$T/warm-state/templates/$NS")"; return 1; }
	for _ in $(seq 1 50); do
		[ "$(pgrep -fc "containerd-shim-.*-address $T/c.sock" || true)" = 0 ] && break
		sleep 0.1
	done
	[ "$(pgrep -fc "containerd-shim-.*-address $T/c.sock" || true)" = 0 ] || { log "pod template: a shim is still running"; return 1; }
	[ -z "$(runc --root "$T/warm-runc-root/$NS" list -q 2>/dev/null)" ] || { log "pod template: runc containers left: $(runc --root "$T/warm-runc-root/$NS" list -q)"; return 1; }
	echo "pod template: ok (pods b and c restored from pod a's template into their own network namespaces)" | tee -a "$OUTDIR/smoke.txt"
}
if [[ " $HANDLERS " == *" warm "* ]] && [ "$smoke_rc" = 0 ]; then
	pod_template || { log "pod template test failed"; smoke_rc=1; }
fi
if [ "${CRITEST_SMOKE_ONLY:-0}" = 1 ]; then
	exit "$smoke_rc"
fi

# --- critest per handler ---------------------------------------------------------------
reports=()
for h in $HANDLERS; do
	log "critest v1.37.0, handler $h"
	skip=${CRITEST_SKIP:-}
	args=(-runtime-endpoint "unix://$T/c.sock" -image-endpoint "unix://$T/c.sock"
		-config "$T/crictl.yaml" -runtime-handler "$h" -nri-socket "$T/nri.sock"
		-ginkgo.junit-report "$OUTDIR/junit_$h.xml" -ginkgo.json-report "$OUTDIR/report_$h.json"
		-ginkgo.no-color)
	# critest's -parallel 1 trips Ginkgo's check for go test's -parallel; 1 is the default.
	[ "$PARALLEL" != 1 ] && args+=(-parallel "$PARALLEL")
	[ -n "${CRITEST_FOCUS:-}" ] && args+=(-ginkgo.focus "$CRITEST_FOCUS")
	[ -n "$skip" ] && args+=(-ginkgo.skip "$skip")
	start=$(date +%s)
	set +e
	# In the background, so that a signal to this script runs the teardown at once.
	(cd "$T" && exec critest "${args[@]}") >"$OUTDIR/critest_$h.log" 2>&1 &
	CRITEST_PID=$!
	wait "$CRITEST_PID"
	crc=$?
	CRITEST_PID=
	set -e
	end=$(date +%s)
	log "handler $h: critest exit $crc in $((end - start))s; log $OUTDIR/critest_$h.log"
	echo "$((end - start))" >"$OUTDIR/wall_$h.txt"
	[ -s "$OUTDIR/junit_$h.xml" ] || die "no JUnit report for $h: $(tail -20 "$OUTDIR/critest_$h.log")"
	# A spec that fails (and is not allow-listed) runs again, alone, up to twice: some
	# specs race containerd's own clean-up on a loaded 2-core machine, with either
	# handler. One that then passes counts as passed and is listed as flaky.
	while IFS= read -r spec; do
		[ -n "$spec" ] || continue
		if cut -f1 "$HERE/scripts/cri/runc-allowlist.tsv" | grep -qxF "$spec"; then
			continue
		fi
		focus=$(python3 "$HERE/scripts/cri/junit.py" focus "$spec")
		for try in 1 2; do
			rargs=(-runtime-endpoint "unix://$T/c.sock" -image-endpoint "unix://$T/c.sock"
				-config "$T/crictl.yaml" -runtime-handler "$h" -nri-socket "$T/nri.sock"
				-ginkgo.junit-report "$OUTDIR/retry_${h}.xml" -ginkgo.no-color -ginkgo.focus "$focus")
			if (cd "$T" && critest "${rargs[@]}") >>"$OUTDIR/critest_${h}_retries.log" 2>&1; then
				python3 "$HERE/scripts/cri/junit.py" mark-passed "$OUTDIR/junit_$h.xml" "$spec"
				echo "flaky with $h, passed on retry $try: $spec" | tee -a "$OUTDIR/flaky.txt"
				break
			fi
		done
	done < <(python3 "$HERE/scripts/cri/junit.py" failed "$OUTDIR/junit_$h.xml")
	reports+=("$h")
done

# --- summary -------------------------------------------------------------------------
set +e
ref=${reports[0]}
cand=${reports[1]:-}
sargs=(-ref-name "$ref" -ref "$OUTDIR/junit_$ref.xml" -allow "$HERE/scripts/cri/runc-allowlist.tsv")
[ -n "$cand" ] && sargs+=(-cand-name "$cand" -cand "$OUTDIR/junit_$cand.xml")
"$T/bin/crisummary" "${sargs[@]}" | tee "$OUTDIR/summary.txt"
src=${PIPESTATUS[0]}
[ -s "$OUTDIR/flaky.txt" ] && cat "$OUTDIR/flaky.txt" >>"$OUTDIR/summary.txt"
cat "$OUTDIR/smoke.txt" >>"$OUTDIR/summary.txt"
[ "$smoke_rc" = 0 ] || { echo "crictl smoke test failed (see above)" | tee -a "$OUTDIR/summary.txt"; src=1; }
for h in "${reports[@]}"; do echo "critest $h wall time: $(cat "$OUTDIR/wall_$h.txt")s" | tee -a "$OUTDIR/summary.txt"; done
set -e
exit "$src"
