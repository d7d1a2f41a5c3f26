# shellcheck shell=bash disable=SC2034
# Shared settings for tests/cluster/{build,image,up,down}. Sourced, not run.
# Everything here can be overridden from the environment.

RUNG_CACHE="${RUNG_CACHE:-$HOME/.cache/rung}"
RUNG_CLUSTER_DIR="${RUNG_CLUSTER_DIR:-/tmp/rung-cluster}"

# Pinned versions (the newest 1.34 patch and 3.6 patch the Go proxy served when pinned).
RUNG_K8S_VERSION="${RUNG_K8S_VERSION:-v1.34.4}"
RUNG_ETCD_VERSION="${RUNG_ETCD_VERSION:-v3.6.16}"
RUNG_PAUSE_TAG="${RUNG_PAUSE_TAG:-3.10-rung}"
RUNG_TOXIPROXY_VERSION="${RUNG_TOXIPROXY_VERSION:-v2.12.0}"   # newest v2 the Go proxy served
RUNG_HELM_VERSION="${RUNG_HELM_VERSION:-v3.22.0}"             # newest v3 the Go proxy served
RUNG_KWOK_VERSION="${RUNG_KWOK_VERSION:-v0.7.0}"               # simulated nodes for bench/scale

K8S_DIR="$RUNG_CACHE/k8s/$RUNG_K8S_VERSION"
K8S_BIN="$K8S_DIR/bin"
ETCD_DIR="$RUNG_CACHE/etcd/$RUNG_ETCD_VERSION"
ETCD_BIN="$ETCD_DIR/bin"
PAUSE_DIR="$RUNG_CACHE/pause/$RUNG_K8S_VERSION"
PAUSE_IMAGE="registry.k8s.io/pause:$RUNG_PAUSE_TAG"
TOXIPROXY_DIR="$RUNG_CACHE/toxiproxy/$RUNG_TOXIPROXY_VERSION"
TOXIPROXY_BIN="$TOXIPROXY_DIR/bin"
HELM_DIR="$RUNG_CACHE/helm/$RUNG_HELM_VERSION"
HELM_BIN="$HELM_DIR/bin"
KWOK_DIR="$RUNG_CACHE/kwok/$RUNG_KWOK_VERSION"
KWOK_BIN="$KWOK_DIR/bin"
# `up` links kubectl and helm here, so tests and people find them at one documented path.
RUNG_BIN="$RUNG_CACHE/bin"

# Loopback ports (all bound to 127.0.0.1).
RUNG_ETCD_PORT="${RUNG_ETCD_PORT:-23790}"
RUNG_ETCD_PEER_PORT="${RUNG_ETCD_PEER_PORT:-23800}"
RUNG_APISERVER_PORT="${RUNG_APISERVER_PORT:-16443}"
RUNG_KCM_PORT="${RUNG_KCM_PORT:-10257}"
RUNG_SCHED_PORT="${RUNG_SCHED_PORT:-10259}"
RUNG_KUBELET_PORT="${RUNG_KUBELET_PORT:-10250}"
RUNG_KUBELET_HEALTHZ_PORT="${RUNG_KUBELET_HEALTHZ_PORT:-10248}"
# toxiproxy (tests/cluster/toxiproxy-up): its HTTP API, and the proxy `apiserver` that
# forwards RUNG_TOXIPROXY_LISTEN to the API server (faults are injected there).
RUNG_TOXIPROXY_API="${RUNG_TOXIPROXY_API:-127.0.0.1:8474}"
RUNG_TOXIPROXY_LISTEN="${RUNG_TOXIPROXY_LISTEN:-127.0.0.1:16444}"

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
OPERATOR_IMAGE="${RUNG_OPERATOR_IMAGE:-docker.io/library/rung-operator:$RUNG_VERSION}"

# ---- processes the harness starts (up, restart-apiserver): pid files and logs in the state dir
pid_alive() { # pid_alive NAME: the process from pids/NAME.pid is running and is ours
  local f="$RUNG_CLUSTER_DIR/pids/$1.pid" pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [ -d "/proc/$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$RUNG_CLUSTER_DIR"
}
pid_running() { # pid_running NAME: the process from pids/NAME.pid exists and is not a zombie
  local f="$RUNG_CLUSTER_DIR/pids/$1.pid" pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}
start() { # start NAME CMD...: run detached, log to logs/NAME.log, pid to pids/NAME.pid
  local name="$1"; shift
  setsid "$@" >>"$RUNG_CLUSTER_DIR/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUNG_CLUSTER_DIR/pids/$name.pid"
  log "started $name (pid $!, log $RUNG_CLUSTER_DIR/logs/$name.log)"
}
wait_for() { # wait_for WHAT TIMEOUT CMD...  (WAIT_PID=NAME: fail early if that process exits)
  local what="$1" timeout="$2"; shift 2
  local t0; t0=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    if [ $(( $(date +%s) - t0 )) -ge "$timeout" ]; then die "timed out after ${timeout}s waiting for $what (see $RUNG_CLUSTER_DIR/logs/)"; fi
    if [ -n "${WAIT_PID:-}" ] && ! pid_running "$WAIT_PID"; then
      tail -20 "$RUNG_CLUSTER_DIR/logs/$WAIT_PID.log" >&2 || true
      die "$WAIT_PID exited while waiting for $what (log $RUNG_CLUSTER_DIR/logs/$WAIT_PID.log)"
    fi
    sleep 0.5
  done
  log "$what ready ($(( $(date +%s) - t0 ))s)"
}
