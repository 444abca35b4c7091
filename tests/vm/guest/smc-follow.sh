#!/bin/bash
# SMC follows its probe: pods already on SMC stop making SMC connections when a later
# reachability probe fails (their next socket() is plain TCP) and make them again once a
# probe passes — without restarting or re-ADDing them. The re-probe is driven by the real
# `meshaccel-installer run` daemon (every reachabilityTtl while SMC pods run); then the
# same with the daemon stopped, where the plugin's own ADD-time probe moves the gate.
# Run by tests/vm/run.sh (fails on D-state tasks and hung-task reports).
#
# RoCE is broken one way exactly as in smc-broken.sh (see its header: the peer's RDMA
# lookups routed via a gateway with a foreign MAC). NEVER make an SMC connection while it
# is broken: that is the hang the gate exists to prevent. So every connection made while
# broken is made only after `converted` showed that a fresh socket() is plain TCP.
source "$(dirname "$0")/lib.sh"
I=$INSTALLER_BIN
TTL=8 TIMEOUT_MS=5000
# How long to wait for the gate to move: a TTL, a probe at its deadline, TCG slack.
WAIT_S=$((TTL + TIMEOUT_MS / 1000 + 25))

node_up
PREV_A=$(pod_up podA 1) && PREV_B=$(pod_up podB 2) && PREV_C=$(pod_up podC 3) && PREV_D=$(pod_up podD 4) &&
  peer_up peerR 9 || { not_ok "pods up"; finish; exit 1; }
A=$(pod_ip podA) B=$(pod_ip podB) R=${PEER%:*}
SMC='{"enabled":true,"mode":"auto","rdmaDevice":"rxe0","ueid":"MESHACCEL-TEST","reachabilityTtl":'$TTL',
      "probe":{"peers":["'$PEER'"],"timeoutMs":'$TIMEOUT_MS'}}'
# add POD PREV N: ADD, its result discarded (check still prints ok/FAIL).
add() { cni ADD "$M" "$1" "$(meshaccel_conf "$SMC" "$2")" "$3" >/dev/null; }
# cni_check POD PREV N: CHECK with the prevResult ADD returned.
cni_check() { cni CHECK "$M" "$1" "$(meshaccel_conf "$SMC" "$2")" "$3"; }
gate() { json "$1" < $STATE/smc-gate.json; }
status_json() { "$M" status --json --state-dir $STATE --bpffs-root $BPFFS; }
metric() { python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9811/metrics', timeout=5).read().decode())" |
  awk -v m="$1" '$1 == m {print $2}'; }
# wait_gate STATE: until the node's SMC gate is STATE (suspended/active), at most WAIT_S s.
wait_gate() {
  local t0=$SECONDS
  while ((SECONDS - t0 < WAIT_S)); do
    [[ $(status_json | json 'd["smcGate"]["state"]') == "$1" ]] && { GATE_S=$((SECONDS - t0)); return 0; }
    sleep 1
  done
  return 1
}
no_dstate() { test -z "$(grep -l '^State:.*D (disk sleep)' /proc/[0-9]*/status 2>/dev/null)"; }
# smc_transfer CLIENT SERVER_NS SERVER_IP PORT: 1 MiB, both ends must be in mode SMCR.
smc_transfer() {
  transfer "$@" $((1 << 20)); local rc=$?
  check "$1→$2: 1 MiB intact" test $rc -eq 0 -a "$(echo "$CL" | json 'd["intact"]')" = True
  check "  … client and server in mode SMCR" \
    test "$(echo "$CL" | json 'd["diag"]["mode"]')$(echo "$SV" | json 'd["diag"]["mode"]')" = SMCRSMCR
}
# tcp_transfer CLIENT SERVER_NS SERVER_IP PORT: only once CLIENT's and SERVER's new sockets
# are plain (else skipped: an SMC connection on the broken path would hang).
tcp_transfer() {
  if [[ $(converted "$1") != 0 || $(converted "$2") != 0 ]]; then
    not_ok "$1→$2 NOT attempted: a new socket() is still SMC on a broken path"; return
  fi
  transfer "$@" $((1 << 20)); local rc=$?
  check "$1→$2 over plain TCP: 1 MiB intact" test $rc -eq 0 -a "$(echo "$CL" | json 'd["intact"]')" = True
  check "  … neither end is an SMC socket (smc_diag)" \
    test "$(echo "$CL" | json 'd["diag"] is None')$(echo "$SV" | json 'd["diag"] is None')" = TrueTrue
}
break_path() {
  inns peerR ip rule add ipproto tcp lookup 100 pref 100
  inns peerR ip route add default via 10.1.9.1 dev eth0 table 100
  inns peerR ip neigh replace 10.1.9.254 lladdr 02:00:00:00:00:fe dev eth0 nud permanent
  inns peerR ip route add 10.1.0.0/16 via 10.1.9.254 dev eth0
}
repair_path() {
  inns peerR ip route del 10.1.0.0/16 via 10.1.9.254 dev eth0
  inns peerR ip route del default via 10.1.9.1 dev eth0 table 100
  inns peerR ip rule del ipproto tcp lookup 100 pref 100
}

echo "# 1. RoCE working: podA and podB on SMC-R"
check "ADD podA" add podA "$PREV_A" 1
check "ADD podB" add podB "$PREV_B" 2
check "verdict: verified" test "$(verdict 'd["verified"]')" = True
check "gate active" test "$(status_json | json 'd["smcGate"]["state"]')" = active
check "podA, podB converted" test "$(converted podA)$(converted podB)" = 11
smc_transfer podA podB "$B" 7000

echo "# 2. The installer daemon re-checks every ${TTL}s while SMC pods run"
ip link set lo up
mkdir -p /tmp/inst/net.d /tmp/inst/bin
ipvlan_conf 1 | python3 -c 'import json,sys; c=json.load(sys.stdin); n=c.pop("name"); v=c.pop("cniVersion")
print(json.dumps({"cniVersion": v, "name": n, "plugins": [c]}))' > /tmp/inst/net.d/10-smcnet.conflist
PLUGIN_CONF=$(meshaccel_conf "$SMC" "" | json 'json.dumps({k: d[k] for k in ("sockmap", "stateDir", "log", "smc")})')
"$I" run --cni-conf-dir /tmp/inst/net.d --cni-bin-dirs /tmp/inst/bin --plugin-binary "$M" --bpffs-root "$BPFFS" \
  --plugin-conf "$PLUGIN_CONF" --adopt false --listen 127.0.0.1:9811 --log-level info > /tmp/installer.log 2>&1 &
INST=$!
t0=$SECONDS
until [[ $(metric 'meshaccel_smc_reachability_rechecks_total{verdict="verified"}') -ge 1 ]] || ((SECONDS - t0 > WAIT_S)); do sleep 1; done
check "a re-check from a pod netns passed ($((SECONDS - t0)) s after start)" \
  test "$(metric 'meshaccel_smc_reachability_rechecks_total{verdict="verified"}')" -ge 1
check "  … metric: not suspended" test "$(metric meshaccel_smc_suspended)" = 0
check "  … podA still converted" test "$(converted podA)" = 1

echo "# 3. RoCE broken one way (peer → pods): the daemon's re-probe suspends SMC for running pods"
break_path
t_break=$SECONDS
check "gate suspended without any ADD" wait_gate suspended
echo "# suspended $GATE_S s after the break (TTL ${TTL}s, probe timeout ${TIMEOUT_MS} ms)"
echo "# gate: $(tr -d '\n' < $STATE/smc-gate.json)"
check "  … by the daemon's failed re-check" test "$(metric 'meshaccel_smc_reachability_rechecks_total{verdict="failed"}')" -ge 1
check "  … reason: the probe's failed step" grep -q "timed out waiting for the connect response" <<<"$(gate 'd["reason"]')"
check "  … metric: suspended" test "$(metric meshaccel_smc_suspended)" = 1
check "  … the program's suspend key is set" test "$(status_json | json 'd["smcGate"]["programSuspended"]')" = True
check "  … status shows podA suspended" \
  test "$(status_json | json '[s["gate"] for s in d["smc"] if "podA" in s["attachment"]][0]')" = suspended
check "  … doctor shows it" test "$("$M" doctor --json --state-dir $STATE --bpffs-root $BPFFS 2>/dev/null | json 'd["smcGate"]["state"]')" = suspended
check "podA's new socket() is plain TCP (not restarted, not re-ADDed)" test "$(converted podA)" = 0
check "podB's too" test "$(converted podB)" = 0
check "CHECK podA passes while suspended (designed state)" cni_check podA "$PREV_A" 1
tcp_transfer podA podB "$B" 7001
check "no task in D state" no_dstate

echo "# 4. Path repaired: the daemon's next re-probe resumes SMC for the same pods"
repair_path
check "gate active again without any ADD" wait_gate active
echo "# active $GATE_S s after the repair"
check "  … metric: not suspended" test "$(metric meshaccel_smc_suspended)" = 0
check "  … suspend key cleared" test "$(status_json | json 'd["smcGate"]["programSuspended"]')" = False
check "podA's new socket() is SMC again" test "$(converted podA)" = 1
smc_transfer podA podB "$B" 7002
check "CHECK podA passes" cni_check podA "$PREV_A" 1
check "SMC records untouched (podA, podB)" test "$(ls $STATE/smc/*.json | wc -l)" = 2
kill -TERM $INST; wait $INST; rc=$?
check "installer stopped on SIGTERM (exit $rc)" test $rc -eq 0
echo "--- installer log"; grep -i "smc\|reach" /tmp/installer.log | tail -n 12

echo "# 5. No daemon: the plugin's own ADD-time probe moves the gate"
break_path
sleep $((TTL + 1))   # the verified verdict expires
check "ADD podC (probe fails; failurePolicy open)" add podC "$PREV_C" 3
check "verdict: not verified" test "$(verdict 'd["verified"]')" = False
check "gate suspended by the ADD" test "$(status_json | json 'd["smcGate"]["state"]')" = suspended
check "podC not converted, podA's new socket() plain" test "$(converted podC)$(converted podA)" = 00
tcp_transfer podA podB "$B" 7003
check "no task in D state" no_dstate
repair_path
sleep $((TTL + 1))
check "ADD podD (probe passes)" add podD "$PREV_D" 4
check "gate active again" test "$(status_json | json 'd["smcGate"]["state"]')" = active
check "podA's and podD's new socket() SMC" test "$(converted podA)$(converted podD)" = 11
smc_transfer podA podD "$(pod_ip podD)" 7004

for p in podA podB podC podD; do check "DEL $p" cni DEL "$M" $p "$(meshaccel_conf "$SMC" "")" 1; done
check "no SMC record left" test -z "$(ls $STATE/smc/*.json 2>/dev/null)"
kill $PEER_PID; wait $PEER_PID 2>/dev/null
finish
