# Shared helpers of the guest test scripts: TAP-ish output, CNI invocation, pods on an
# ipvlan (L2) master with the Soft-RoCE shims Linux 6.12 needs (see docs/smc.md).
set -uo pipefail
source /mnt/env                      # MESHACCEL_BIN, REPO (written by tests/vm/run.sh)
M=$MESHACCEL_BIN
G=$REPO/tests/vm/guest
T="python3 $G/smctool.py"
CNI_BIN=/usr/lib/cni
STATE=/run/meshaccel
BPFFS=/sys/fs/bpf/meshaccel
PASS=0 FAILED=0

ok() { echo "ok - $*"; PASS=$((PASS + 1)); }
not_ok() { echo "FAIL - $*"; FAILED=$((FAILED + 1)); }
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds.
check() { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
finish() {
  echo "--- meshaccel log"; tail -n 40 /run/meshaccel.log 2>/dev/null
  echo "$PASS passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# node: one dummy h0 (fixed high ifindex, so pods' eth0 indexes are free here), rxe0 on it.
node_up() {
  ip link del dummy0 2>/dev/null   # the dummy module's own; it would take ifindex 2 (pods' eth0)
  ip link add h0 index 100 type dummy && ip link set h0 up

  rdma link add rxe0 type rxe netdev h0
  H0MAC=$(cat /sys/class/net/h0/address)
}

# cni CMD PLUGIN POD CONF_JSON: runs one plugin the way libcni does; result on stdout.
cni() {
  echo "$4" | CNI_COMMAND=$1 CNI_CONTAINERID=cid-$3 CNI_NETNS=/run/netns/$3 CNI_IFNAME=eth0 \
    CNI_PATH=$CNI_BIN CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$3;K8S_POD_UID=00000000-0000-4000-8000-0000000000$5" \
    "$2"
}

ipvlan_conf() { # SUBNET_OCTET
  echo '{"cniVersion":"1.0.0","name":"smcnet","type":"ipvlan","master":"h0","mode":"l2",
    "ipam":{"type":"host-local","subnet":"10.1.'$1'.0/24","gateway":"10.1.'$1'.1","routes":[{"dst":"0.0.0.0/0"}]}}'
}

# meshaccel_conf SMC_JSON PREV_RESULT [ANNOTATION_SMC]
meshaccel_conf() {
  python3 - "$1" "$2" "${3:-}" <<'PY'
import json, sys
smc, prev, ann = json.loads(sys.argv[1]), json.loads(sys.argv[2]) if sys.argv[2] else None, sys.argv[3]
c = {"cniVersion": "1.0.0", "name": "smcnet", "type": "meshaccel", "sockmap": {"enabled": False},
     "bpffsRoot": "/sys/fs/bpf/meshaccel", "stateDir": "/run/meshaccel",
     "log": {"file": "/run/meshaccel.log", "level": "debug"}, "smc": smc}
if prev: c["prevResult"] = prev
if ann: c["runtimeConfig"] = {"io.kubernetes.cri.pod-annotations": {"meshaccel.io/smc": ann}}
print(json.dumps(c))
PY
}

# pod_up NAME OCTET: netns + ipvlan ADD + shims; prints the ipvlan result (prevResult).
pod_up() {
  local ns=$1 n=$2 res ip idx
  ip netns add "$ns"; ip -n "$ns" link set lo up
  res=$(cni ADD $CNI_BIN/ipvlan "$ns" "$(ipvlan_conf "$n")" "$n") || { echo "ipvlan ADD failed: $res" >&2; return 1; }
  ip=$(echo "$res" | json 'd["ips"][0]["address"].split("/")[0]')
  # Soft-RoCE shims (6.12): an init-netns device with the pod eth0's ifindex, the pod IP local.
  idx=$(ip -n "$ns" -o link show eth0 | cut -d: -f1)
  ip -o link show | grep -q "^$idx:" || ip link add "shim$idx" index "$idx" type dummy
  ip link set "$(ip -o link show | awk -F': ' -v i="$idx" '$1 == i {print $2}')" up
  ip route add table local local "$ip" dev lo 2>/dev/null
  ip -n "$ns" neigh replace "10.1.$n.1" lladdr "$H0MAC" dev eth0 nud permanent
  echo "$res"
}

pod_ip() { ip -n "$1" -o -4 addr show eth0 | awk '{print $4}' | cut -d/ -f1; }

# in POD CMD...: runs in the pod netns.
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# smc_sockets POD: how many AF_SMC sockets a fresh plain socket() adds in POD (1 = converted).
converted() {
  inns "$1" python3 -c "
import sys; sys.path.insert(0, '$G'); import smctool, socket
before = len(smctool.diag()); s = socket.socket(); print(len(smctool.diag()) - before)"
}

pnet_of() { # NETNS|'' → the PNET table as JSON (doctor's view of that netns)
  if [[ -n $1 ]]; then inns "$1" "$M" doctor --json; else "$M" doctor --json; fi 2>/dev/null | json 'json.dumps(d["pnetTable"]["detail"])'
}

# has_entry NETNS|'' PNETID ETH|'' IBDEV|'': the netns' PNET table has that row.
has_entry() {
  pnet_of "$1" | python3 -c "
import json, sys
want = {'pnetid': sys.argv[1], 'eth': sys.argv[2] or None, 'ib': [sys.argv[3], 1] if sys.argv[3] else None}
rows = json.load(sys.stdin)
sys.exit(0 if want in rows else 'no %s in %s' % (want, rows))" "$2" "$3" "$4"
}

stat_of() { # POD EXPR over smc-stats JSON
  inns "$1" "$M" smc-stats --json | json "$2"
}

# peer_up NAME OCTET: a pod-like netns running `meshaccel rdma-responder` on port 7471: the
# reachability probe's peer, standing for another node's agent (on 6.12 the host netns
# cannot reach pods over rxe, so the responder cannot run there). Sets PEER (IP:PORT) and
# PEER_PID; its log is /tmp/responder-NAME.log.
peer_up() {
  pod_up "$1" "$2" >/dev/null || return 1
  PEER="$(pod_ip "$1"):7471"
  inns "$1" "$M" rdma-responder --listen "$PEER" --log-level debug > "/tmp/responder-$1.log" 2>&1 & PEER_PID=$!
  for _ in $(seq 150); do
    if grep -q listening "/tmp/responder-$1.log"; then
      # The job is a subshell (inns is a function): the responder is its child.
      local child; child=$(awk '{print $1}' "/proc/$PEER_PID/task/$PEER_PID/children" 2>/dev/null)
      PEER_PID=${child:-$PEER_PID}
      return 0
    fi
    sleep 0.2
  done
  echo "responder did not start: $(cat "/tmp/responder-$1.log")" >&2; return 1
}

# transfer CLIENT SERVER_NS SERVER_IP PORT BYTES: echo BYTES through a plain socket();
# sets CL and SV (the client's and the server's JSON reports) and returns the client's rc.
transfer() {
  rm -f "/tmp/srv-$4.json"
  inns "$2" timeout 120 $T serve "$4" > "/tmp/srv-$4.json" & local sp=$! rc
  # Until the server listens (a fixed sleep lost that race on a loaded host: connection refused).
  for _ in $(seq 300); do grep -q listening "/tmp/srv-$4.json" 2>/dev/null && break; sleep 0.1; done
  CL=$(inns "$1" timeout 120 $T client "$3" "$4" "$5"); rc=$?
  wait $sp; SV=$(tail -1 "/tmp/srv-$4.json")
  echo "# client: $CL"; echo "# server: $SV"
  return $rc
}

# verdict EXPR: EXPR over the cached RDMA reachability verdict (d).
verdict() { json "$1" < $STATE/smc-reachability.json; }

# peer_state: is the responder alive, and where is each of its threads (for the log).
peer_state() {
  echo "# responder $PEER_PID: $(grep State /proc/$PEER_PID/status 2>/dev/null || echo gone)"
  for t in /proc/$PEER_PID/task/*; do echo "#   task ${t##*/} $(cat $t/wchan 2>/dev/null): $(tr '\n' ' ' < $t/stack 2>/dev/null)"; done
}
