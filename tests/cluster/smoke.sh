#!/usr/bin/env bash
# Smoke check of the real test cluster, run by hand:
#   tests/cluster/smoke.sh            # up, checks, down
#   RUNG_SMOKE_KEEP=1 tests/cluster/smoke.sh   # leave the cluster up afterwards
# Checks: a pod runs the trial image (imported, never pulled) and imports rung,
# rung_trainables and numpy; it has a pod IP on the bridge and no default route; its
# termination message is readable through the API; deleting a namespace completes
# (kube-controller-manager's namespace controller and garbage collector).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUNG_LOG_TAG=smoke
. "$HERE/lib/common.sh"

t0=$(date +%s)
KUBECONFIG=$("$HERE/up")
export KUBECONFIG
log "up took $(( $(date +%s) - t0 ))s; KUBECONFIG=$KUBECONFIG"
K="$K8S_BIN/kubectl"; [ -x "$K" ] || K=kubectl
IMAGE="$TRIAL_IMAGE"
ns="rung-smoke-$$"

cleanup() {
  if [ "${RUNG_SMOKE_KEEP:-0}" != 1 ] && [ "${RUNG_USE_EXISTING_CLUSTER:-0}" != 1 ]; then "$HERE/down"; fi
}
trap cleanup EXIT

"$K" version
"$K" get nodes -o wide
"$K" create namespace "$ns"

cat <<EOF | "$K" -n "$ns" apply -f -
apiVersion: v1
kind: Pod
metadata:
  name: smoke
spec:
  restartPolicy: Never
  containers:
  - name: trial
    image: $IMAGE
    imagePullPolicy: Never
    command:
    - python
    - -c
    - |
      import rung, rung_trainables, numpy
      routes = open("/proc/net/route").read().splitlines()[1:]
      default = [r for r in routes if r.split()[1] == "00000000"]
      assert not default, f"pod has a default route: {default}"
      print("ok")
      with open("/dev/termination-log", "w") as f:
          f.write('{"result": "ok", "numpy": "%s"}' % numpy.__version__)
EOF
"$K" -n "$ns" wait pod/smoke --for=jsonpath='{.status.phase}'=Succeeded --timeout=180s || {
  "$K" -n "$ns" describe pod smoke; "$K" -n "$ns" logs smoke || true; exit 1; }
out=$("$K" -n "$ns" logs smoke)
echo "pod output: $out"
[ "$out" = ok ] || { echo "FAIL: expected 'ok'"; exit 1; }
ip=$("$K" -n "$ns" get pod smoke -o jsonpath='{.status.podIP}')
echo "pod IP: $ip"
msg=$("$K" -n "$ns" get pod smoke -o jsonpath='{.status.containerStatuses[0].state.terminated.message}')
echo "termination message: $msg"
case "$msg" in *'"result": "ok"'*) ;; *) echo "FAIL: termination message"; exit 1;; esac

t1=$(date +%s)
"$K" delete namespace "$ns" --wait=true --timeout=180s
if "$K" get namespace "$ns" >/dev/null 2>&1; then echo "FAIL: namespace $ns still exists"; exit 1; fi
echo "namespace deleted in $(( $(date +%s) - t1 ))s"
echo "smoke: 3 passed, 0 failed"
