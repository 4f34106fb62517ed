#!/usr/bin/env bash
# setup.sh installs, pinned and cached, everything warm's demo and tests need:
# runc, CRIU (private prefix + wrapper), containerd + ctr, nerdctl, CNI plugins,
# iptables and busybox. Idempotent: a second run with everything present is a no-op.
# Prints, as its last line, the bin directory to put first in PATH.
set -euo pipefail

RUNC_VERSION=v1.4.2
CONTAINERD_VERSION=v2.4.2
NERDCTL_VERSION=v2.0.5
CRIU_VERSION=4.1.1
CRITOOLS_VERSION=v1.37.0

HERE=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${WARM_TOOLS:-/var/cache/warm-tools}
BIN=$TOOLS/bin
mkdir -p "$BIN"
log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
	echo "setup.sh must run as root (it installs Debian packages)" >&2
	exit 1
fi

# --- Debian packages (bookworm) ------------------------------------------------
# gcc and libc6-dev: make build compiles the static C front and warm-runc (the tests
# run them under WARM_INTEGRATION=1).
APT_PKGS=(libseccomp-dev pkg-config iptables containernetworking-plugins busybox-static
	python3 docker-registry iproute2 psmisc gcc libc6-dev)
missing=()
for p in "${APT_PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "apt-get install ${missing[*]}"
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
	# docker-registry starts a system service on :5000; the tests run their own.
	systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

# --- CRIU from trixie in a private prefix -----------------------------------------
CRIU_PREFIX=$TOOLS/criu-$CRIU_VERSION
if [ ! -x "$CRIU_PREFIX/usr/sbin/criu" ]; then
	log "CRIU $CRIU_VERSION from Debian trixie into $CRIU_PREFIX"
	work=$(mktemp -d)
	mkdir -p "$work/lists/partial" "$work/debs"
	uris=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	printf 'deb %s trixie main\n' "$uris" >"$work/sources.list"
	aptopts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=-"
		-o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Get::List-Cleanup=0)
	mkdir -p "$work/cache/archives/partial"
	apt-get "${aptopts[@]}" update -qq >&2
	have=$(apt-cache "${aptopts[@]}" show criu | awk '/^Version:/{print $2; exit}')
	case "$have" in
	"$CRIU_VERSION"-*) ;;
	*) echo "trixie offers criu $have, want $CRIU_VERSION" >&2; exit 1 ;;
	esac
	pkgs=(criu libcompel1 libc6 libgnutls30t64 libnftables1 libnl-3-200 libprotobuf-c1 libnet1
		libbsd0 libmd0 libnettle8t64 libhogweed6t64 libidn2-0 libp11-kit0 libtasn1-6 libunistring5
		libjansson4 libmnl0 libnftnl11 libxtables12 libgmp10 libffi8 libedit2 libbpf1 libelf1t64
		zlib1g libzstd1 libtinfo6 libgcc-s1 libuuid1 libcap2)
	(cd "$work/debs" && apt-get "${aptopts[@]}" download "${pkgs[@]}" >&2)
	mkdir -p "$CRIU_PREFIX.tmp"
	for d in "$work"/debs/*.deb; do dpkg -x "$d" "$CRIU_PREFIX.tmp"; done
	rm -rf "$CRIU_PREFIX.tmp/usr/lib/x86_64-linux-gnu/gconv" "$CRIU_PREFIX.tmp/usr/share"
	rm -rf "$CRIU_PREFIX"
	mv "$CRIU_PREFIX.tmp" "$CRIU_PREFIX"
	rm -rf "$work"
fi
cat >"$BIN/criu.tmp" <<WRAP
#!/bin/sh
P=$CRIU_PREFIX
exec "\$P/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "\$P/usr/lib/x86_64-linux-gnu:\$P/lib/x86_64-linux-gnu" "\$P/usr/sbin/criu" "\$@"
WRAP
chmod 0755 "$BIN/criu.tmp"
mv "$BIN/criu.tmp" "$BIN/criu"

# --- Go-built tools, pinned by tools/go.mod ---------------------------------------
export GOFLAGS=-buildvcs=false
stamp() { [ -x "$BIN/$1" ] && [ -f "$BIN/.$1.version" ] && [ "$(cat "$BIN/.$1.version")" = "$2" ]; }
mark() { echo "$2" >"$BIN/.$1.version"; }

if ! stamp runc "$RUNC_VERSION"; then
	log "runc $RUNC_VERSION (seccomp)"
	GOBIN=$BIN go install -tags seccomp "github.com/opencontainers/runc@$RUNC_VERSION" >&2
	mark runc "$RUNC_VERSION"
fi

if ! stamp containerd "$CONTAINERD_VERSION" || ! stamp ctr "$CONTAINERD_VERSION"; then
	log "containerd + ctr $CONTAINERD_VERSION"
	(cd "$HERE/tools/containerd" && go build -o "$BIN/" github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr) >&2
	mark containerd "$CONTAINERD_VERSION"
	mark ctr "$CONTAINERD_VERSION"
fi

# The runc shim as containerd builds it for its releases (static, without cgo), like
# warm's own: the benchmarks compare the two.
if ! stamp containerd-shim-runc-v2 "$CONTAINERD_VERSION-static"; then
	log "containerd-shim-runc-v2 $CONTAINERD_VERSION (static)"
	(cd "$HERE/tools/containerd" && CGO_ENABLED=0 go build -o "$BIN/" github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2) >&2
	mark containerd-shim-runc-v2 "$CONTAINERD_VERSION-static"
fi

if ! stamp nerdctl "$NERDCTL_VERSION"; then
	log "nerdctl $NERDCTL_VERSION"
	(cd "$HERE/tools/nerdctl" && GOFLAGS="-buildvcs=false -mod=mod" GONOSUMDB=github.com/containerd/nerdctl,github.com/containerd/stargz-snapshotter \
		go build -o "$BIN/" github.com/containerd/nerdctl/v2/cmd/nerdctl) >&2
	mark nerdctl "$NERDCTL_VERSION"
fi

if [ "${WARM_SETUP_CRITEST:-0}" = 1 ]; then
	# Debian's dynamic busybox for the CRI stand-in images (busybox-static cannot be
	# installed beside it, so only the .deb is kept).
	if ! ls "$TOOLS"/debs/busybox_*.deb >/dev/null 2>&1; then
		log "busybox .deb for the CRI images"
		mkdir -p "$TOOLS/debs"
		(cd "$TOOLS/debs" && apt-get download busybox >&2)
	fi
	if ! stamp critest "$CRITOOLS_VERSION" || ! stamp crictl "$CRITOOLS_VERSION"; then
		log "critest + crictl $CRITOOLS_VERSION"
		(cd "$HERE/tools/critools" && go test -c -o "$BIN/critest" sigs.k8s.io/cri-tools/cmd/critest &&
			go build -o "$BIN/" sigs.k8s.io/cri-tools/cmd/crictl) >&2
		mark critest "$CRITOOLS_VERSION"
		mark crictl "$CRITOOLS_VERSION"
	fi
fi

# A quick self-check: a broken CRIU is the usual trouble on a new kernel.
if ! PATH=$BIN:$PATH criu check >/dev/null 2>&1; then
	log "warning: 'criu check' fails; checkpoint/restore will not work:"
	PATH=$BIN:$PATH criu check >&2 || true
fi
echo "$BIN"
