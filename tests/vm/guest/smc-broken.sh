#!/bin/bash
# Never a hung pod: SMC is enabled only after the two-way RDMA probe passed, and a path
# where RoCE works in ONE direction only (TCP fine) must leave new pods on plain TCP, with
# nothing in D state. Run by tests/vm/run.sh (which fails on D-state tasks and hung-task
# reports; the guest sets kernel.hung_task_timeout_secs=20).
#
# How RoCE is broken one way here (measured on 6.12): between pods of this topology rxe
# never puts RoCEv2 packets through the IP stack — the destination MAC (the gateway's,
# pinned to h0's) is its own, so rxe loops them back internally, and an iptables rule on
# UDP 4791 matches nothing (counters stay 0, the probe still passes). What works: in the
# peer's netns, route the peer's RDMA lookups (protocol 0: rdma_cm and the CM's reply
# path) to the pods via a gateway with a foreign MAC, while TCP (`ip rule ipproto tcp`)
# keeps the real gateway. The peer's RoCE packets then leave rxe through the initial
# netns' stack (a counting iptables rule on UDP 4791 from the peer sees them), come back
# on lo and are dropped by rxe: pods → peer RoCE works, peer → pods does not, TCP works
# both ways. Do NOT drop them with `-j DROP` instead: the failed transmit leaves rxe0's one
# GSI queue pair (QP1, shared by every netns) stuck, and no RDMA CM connection on the device
# works any more, even after the rule is gone (seen: every later probe timed out waiting for
# the connect response and the responder never saw a request).
# Never run an SMC connection while that holds: that is the hang this test guards against.
source "$(dirname "$0")/lib.sh"
TTL=10 TIMEOUT_MS=5000
# Scheduling slack of the emulated (TCG) guest over the probe's deadline.
SLACK_MS=1500

node_up
PREV_A=$(pod_up podA 1) && PREV_B=$(pod_up podB 2) && PREV_C=$(pod_up podC 3) && PREV_D=$(pod_up podD 4) &&
  peer_up peerR 9 || { not_ok "pods up"; finish; exit 1; }
A=$(pod_ip podA) B=$(pod_ip podB) C=$(pod_ip podC) D=$(pod_ip podD) R=${PEER%:*}
SMC='{"enabled":true,"mode":"auto","rdmaDevice":"rxe0","ueid":"MESHACCEL-TEST","reachabilityTtl":'$TTL',
      "probe":{"peers":["'$PEER'"],"timeoutMs":'$TIMEOUT_MS'}}'
add() { cni ADD "$M" "$1" "$(meshaccel_conf "$SMC" "$2")" "$3"; }

echo "# 1. RoCE working: the probe verifies, pods get SMC, SMC-R carries data"
check "ADD podA" add podA "$PREV_A" 1 >/dev/null
check "verdict: verified both ways" test "$(verdict 'd["verified"]')" = True
echo "# verdict: $(cat $STATE/smc-reachability.json | tr -d '\n ')"
check "  … the probe took ≤ its timeout" test "$(verdict 'd["results"][0]["elapsedMs"]')" -le $TIMEOUT_MS
check "podA converted" test "$(converted podA)" = 1
check "ADD podB" add podB "$PREV_B" 2 >/dev/null
check "podB converted" test "$(converted podB)" = 1
transfer podA podB "$B" 7000 $((1 << 20)); rc=$?
check "A→B: 1 MiB intact" test $rc -eq 0 -a "$(echo "$CL" | json 'd["intact"]')" = True
check "  … client and server in mode SMCR" test "$(echo "$CL" | json 'd["diag"]["mode"]')$(echo "$SV" | json 'd["diag"]["mode"]')" = SMCRSMCR

echo "# 2. RoCE broken one way (peer → pods), TCP intact"
gw=10.1.9.1 bogus=10.1.9.254
inns peerR ip rule add ipproto tcp lookup 100 pref 100
inns peerR ip route add default via $gw dev eth0 table 100
inns peerR ip neigh replace $bogus lladdr 02:00:00:00:00:fe dev eth0 nud permanent
inns peerR ip route add 10.1.0.0/16 via $bogus dev eth0
iptables -I OUTPUT -p udp --dport 4791 -s "$R"   # counts only
sleep $((TTL + 1))   # the verified verdict expires
t0=$(date +%s%N)
out=$(add podC "$PREV_C" 3); rc=$?
add_ms=$((($(date +%s%N) - t0) / 1000000))
echo "# verdict: $(cat $STATE/smc-reachability.json | tr -d '\n ')"
echo "# ADD podC took $add_ms ms (probe timeout $TIMEOUT_MS ms)"
check "ADD podC succeeds (failurePolicy open) and passes prevResult through" \
  test $rc -eq 0 -a "$(echo "$out" | json 'd["ips"][0]["address"]')" = "$C/24"
check "verdict: not verified" test "$(verdict 'd["verified"]')" = False
check "  … with a clear reason (no connect response)" grep -q "timed out waiting for the connect response" <<<"$(verdict 'd["detail"]')"
elapsed=$(verdict 'd["results"][0]["elapsedMs"]')
check "  … the probe gave up at its deadline ($elapsed ms ≤ $TIMEOUT_MS + $SLACK_MS)" \
  test "$elapsed" -ge $TIMEOUT_MS -a "$elapsed" -le $((TIMEOUT_MS + SLACK_MS))
check "  … the peer's RoCE packets took the broken path (iptables counter > 0)" \
  test "$(iptables -L OUTPUT -v -n -x | awk '/4791/ {print $1}')" -gt 0
check "  … logged as a failed probe" grep -q "RDMA reachability probe failed" /run/meshaccel.log
check "podC NOT converted" test "$(converted podC)" = 0
check "  … and no SMC record for podC" test -z "$(ls $STATE/smc 2>/dev/null | grep podC)"
check "status reports the failed verdict" test "$("$M" status --json --state-dir $STATE --bpffs-root $BPFFS | json 'd["rdmaReachability"]["ok"]')" = False
doc=$(inns podC "$M" doctor --json --probe --state-dir $STATE --bpffs-root $BPFFS 2>/dev/null)
echo "# doctor --probe: $(echo "$doc" | json 'json.dumps(d["rdmaProbe"])')"
check "doctor --probe (the cached peer set, now) fails too" test "$(echo "$doc" | json 'd["rdmaProbe"]["ok"]')" = False
transfer podC peerR "$R" 7001 $((1 << 20)); rc=$?
check "C→peer over plain TCP: 1 MiB intact" test $rc -eq 0 -a "$(echo "$CL" | json 'd["intact"]')" = True
transfer podC podB "$B" 7002 $((1 << 20)); rc=$?
check "C→B (B on SMC, suspended by the failed verdict): 1 MiB intact" test $rc -eq 0 -a "$(echo "$CL" | json 'd["intact"]')" = True
check "  … B's server is plain TCP (the node's SMC gate is suspended; smc-follow.sh tests it)" \
  test "$(echo "$SV" | json 'd["diag"] is None')" = True
check "no task in D state" test -z "$(grep -l '^State:.*D (disk sleep)' /proc/[0-9]*/status 2>/dev/null)"
peer_state
check "the responder survived the broken probe" kill -0 $PEER_PID

echo "# 3. Path repaired: after the TTL a new ADD verifies again and converts"
iptables -D OUTPUT -p udp --dport 4791 -s "$R"
inns peerR ip route del 10.1.0.0/16 via $bogus dev eth0
inns peerR ip rule del ipproto tcp lookup 100 pref 100
sleep $((TTL + 1))
peer_state
check "ADD podD" add podD "$PREV_D" 4 >/dev/null
echo "# verdict: $(cat $STATE/smc-reachability.json | tr -d '\n ')"
check "verdict: verified again" test "$(verdict 'd["verified"]')" = True
check "podD converted" test "$(converted podD)" = 1
transfer podD podB "$B" 7003 $((1 << 20)); rc=$?
check "D→B: 1 MiB intact" test $rc -eq 0 -a "$(echo "$CL" | json 'd["intact"]')" = True
check "  … client and server in mode SMCR" test "$(echo "$CL" | json 'd["diag"]["mode"]')$(echo "$SV" | json 'd["diag"]["mode"]')" = SMCRSMCR

for p in podA podB podC podD; do cni DEL "$M" $p "$(meshaccel_conf "$SMC" "")" 1 >/dev/null; done
kill $PEER_PID; wait $PEER_PID 2>/dev/null
echo "--- responder log"; tail -n 20 /tmp/responder-peerR.log
finish
