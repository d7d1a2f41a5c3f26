# shellcheck shell=bash disable=SC2034
# Shared settings for tests/cluster/{build,image,up,down}. Sourced, not run.
# Everything here can be overridden from the environment.

RUNG_CACHE="${RUNG_CACHE:-$HOME/.cache/rung}"
RUNG_CLUSTER_DIR="${RUNG_CLUSTER_DIR:-/tmp/rung-cluster}"

# Pinned versions (the newest 1.34 patch and 3.6 patch the Go proxy served when pinned).
RUNG_K8S_VERSION="${RUNG_K8S_VERSION:-v1.34.4}"
RUNG_ETCD_VERSION="${RUNG_ETCD_VERSION:-v3.6.16}"
RUNG_PAUSE_TAG="${RUNG_PAUSE_TAG:-3.10-rung}"

K8S_DIR="$RUNG_CACHE/k8s/$RUNG_K8S_VERSION"
K8S_BIN="$K8S_DIR/bin"
ETCD_DIR="$RUNG_CACHE/etcd/$RUNG_ETCD_VERSION"
ETCD_BIN="$ETCD_DIR/bin"
PAUSE_DIR="$RUNG_CACHE/pause/$RUNG_K8S_VERSION"
PAUSE_IMAGE="registry.k8s.io/pause:$RUNG_PAUSE_TAG"

# Loopback ports (all bound to 127.0.0.1).
RUNG_ETCD_PORT="${RUNG_ETCD_PORT:-23790}"
RUNG_ETCD_PEER_PORT="${RUNG_ETCD_PEER_PORT:-23800}"
RUNG_APISERVER_PORT="${RUNG_APISERVER_PORT:-16443}"
RUNG_KCM_PORT="${RUNG_KCM_PORT:-10257}"
RUNG_SCHED_PORT="${RUNG_SCHED_PORT:-10259}"
RUNG_KUBELET_PORT="${RUNG_KUBELET_PORT:-10250}"
RUNG_KUBELET_HEALTHZ_PORT="${RUNG_KUBELET_HEALTHZ_PORT:-10248}"

# Pod network: a bridge that exists only on this machine; pods get no default route.
RUNG_BRIDGE="${RUNG_BRIDGE:-rung0}"
RUNG_POD_SUBNET="${RUNG_POD_SUBNET:-10.88.0.0/16}"
RUNG_BRIDGE_IP="${RUNG_BRIDGE_IP:-10.88.0.1}"
RUNG_SERVICE_CIDR="${RUNG_SERVICE_CIDR:-10.96.0.0/16}"
RUNG_NODE_NAME="${RUNG_NODE_NAME:-rung-node}"

_RUNG_T0="${_RUNG_T0:-$(date +%s)}"
export _RUNG_T0

log() { # progress to stderr, with elapsed seconds since the script started
  printf '[%s +%ss] %s\n' "${RUNG_LOG_TAG:-rung}" "$(( $(date +%s) - _RUNG_T0 ))" "$*" >&2
}
die() { log "ERROR: $*"; exit 1; }

have_go_env() {
  export CGO_ENABLED=0 GOTOOLCHAIN=local
  export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
}

# The trial image is tagged with the package version: the operator's default trial image
# is rung-trial:<version>, so Studies that leave spec.trial.image out run on this build.
RUNG_VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../../../operator/rung/__init__.py")
TRIAL_IMAGE="${RUNG_TRIAL_IMAGE:-docker.io/library/rung-trial:$RUNG_VERSION}"
