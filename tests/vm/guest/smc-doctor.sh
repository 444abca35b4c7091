#!/bin/bash
# On a real SMC kernel (Debian 6.12 in qemu), run by tests/vm/run.sh:
#  - `meshaccel doctor --syn-check` against an SMC listener (option present), a plain TCP
#    listener (absent), the same SMC listener behind a path that strips option 254
#    (absent), a closed port (reset); no connection is ever made;
#  - the UEID's life cycle: removed by `meshaccel-installer uninstall` only if meshaccel
#    added it; a pod's DEL after the uninstall still restores its netns.
source "$(dirname "$0")/lib.sh"
I=$INSTALLER_BIN
IPT=iptables-legacy   # the VM has x_tables/ip_tables modules, not nf_tables
UEID=MESHACCEL-DOCTOR
# No SMC connection is ever made here (syn-check sends a bare SYN), so the reachability
# probe is waived: this script is about the UEID's life cycle, smc-broken.sh about the probe.
SMC='{"enabled":true,"mode":"auto","pnetId":"NET1","rdmaDevice":"rxe0","ueid":"'$UEID'",
      "probe":{"trust":true},"sysctls":{"net.smc.wmem":"262144"}}'

node_up
PREV_A=$(pod_up podA 1) && PREV_B=$(pod_up podB 2) || { not_ok "pods up"; finish; exit 1; }
B=$(pod_ip podB)

# syn_check POD TARGET: the report (the exit status says whether the option came back).
syn_check() { inns "$1" "$M" doctor --syn-check "$2" --timeout 3 --json; }
field() { echo "$1" | json "d[\"$2\"]"; }
# connections POD: non-listening sockets of POD, TCP and SMC.
connections() {
  echo $(( $(inns "$1" ss -Htn state all '( sport = :7100 or sport = :7101 or dport = :7100 or dport = :7101 )' | grep -vc LISTEN) + \
           $(inns "$1" $T diag | json 'len([e for e in d if e["state"] != 10])') ))
}

echo "# 1. syn-check: SMC listener, plain TCP listener"
inns podB timeout 400 $T serve 7100 --explicit > /tmp/smc-srv.log & smc_srv=$!
inns podB timeout 400 $T serve 7101 > /tmp/tcp-srv.log & tcp_srv=$!
# Python starts slowly under TCG: wait until both listen (at most 30 s).
listening() { cat /tmp/smc-srv.log /tmp/tcp-srv.log 2>/dev/null | grep -c listening; }
for _ in $(seq 60); do [[ $(listening) -eq 2 ]] && break; sleep 0.5; done
check "both listeners up" test "$(listening)" = 2
r=$(syn_check podA "$B:7100"); rc=$?; echo "# $r"
check "SMC listener: SYN-ACK" test "$(field "$r" answer)" = syn-ack
check "  … with the SMC option" test "$(field "$r" smcOption)" = True
check "  … exit status 0" test $rc -eq 0
r=$(syn_check podA "$B:7101"); rc=$?; echo "# $r"
check "plain TCP listener: SYN-ACK" test "$(field "$r" answer)" = syn-ack
check "  … without the SMC option" test "$(field "$r" smcOption)" = False
check "  … exit status non-zero" test $rc -ne 0

echo "# 2. a path that strips option 254 (TCPOPTSTRIP on podB's way in)"
check "strip rule added" inns podB $IPT -t mangle -A PREROUTING -p tcp --dport 7100 -j TCPOPTSTRIP --strip-options 254
r=$(syn_check podA "$B:7100"); rc=$?; echo "# $r"
check "SMC listener behind the stripper: SYN-ACK" test "$(field "$r" answer)" = syn-ack
check "  … without the SMC option" test "$(field "$r" smcOption)" = False
check "  … exit status non-zero" test $rc -ne 0
check "  … the rule saw the SYN" test "$(inns podB $IPT -t mangle -nvxL PREROUTING | awk '/TCPOPTSTRIP/ {print $1}')" -ge 1
inns podB $IPT -t mangle -F PREROUTING
r=$(syn_check podA "$B:7100")
check "rule removed: the option is back" test "$(field "$r" smcOption)" = True

echo "# 3. closed port; no connection anywhere"
r=$(syn_check podA "$B:7102")
check "closed port: reset" test "$(field "$r" answer)" = reset
check "no connection in podB (the SYN-ACKs were reset, no CLC handshake)" test "$(connections podB)" = 0
check "no connection in podA" test "$(connections podA)" = 0
# A listener reports "done" once it has served a connection.
check "neither listener accepted a connection" bash -c '! grep -q done /tmp/smc-srv.log /tmp/tcp-srv.log'
kill $smc_srv $tcp_srv 2>/dev/null; wait

echo "# 4. UEID meshaccel added: removed by meshaccel-installer uninstall; DEL afterwards still restores"
has_ueid() { "$M" doctor --json 2>/dev/null | json 'json.dumps(d["ueids"]["detail"])' | grep -q "\"$UEID\""; }
no_ueid() { ! has_ueid; }
mkdir -p /tmp/inst/net.d /tmp/inst/bin
uninstall() {
  "$I" uninstall --cni-conf-dir /tmp/inst/net.d --cni-bin-dirs /tmp/inst/bin --plugin-binary "$M" \
    --bpffs-root "$BPFFS" --plugin-conf '{"stateDir":"'$STATE'"}' --log-level info 2>&1 | sed 's/^/#   /'
  return "${PIPESTATUS[0]}"
}
host_wmem=$(cat /proc/sys/net/smc/wmem)
check "no UEID $UEID before" no_ueid
check "ADD podA" cni ADD "$M" podA "$(meshaccel_conf "$SMC" "$PREV_A")" 1
check "UEID $UEID added" has_ueid
check "  … recorded as added by meshaccel" test -e "$STATE/smc-ueids/$UEID"
check "  … doctor lists it as meshaccel's" grep -q "$UEID" <<<"$("$M" doctor --json --state-dir "$STATE" | json 'd["ueidsAddedByMeshaccel"]')"
check "meshaccel-installer uninstall" uninstall
check "UEID $UEID removed" no_ueid
check "  … and its record" test ! -e "$STATE/smc-ueids/$UEID"
check "TCP→SMC program unpinned" test ! -e "$BPFFS"
check "podA's SMC record kept" test -n "$(ls "$STATE"/smc/*.json 2>/dev/null)"
check "podA's sysctl still set (uninstall does not see pods' netns)" test "$(inns podA cat /proc/sys/net/smc/wmem)" = 262144
check "DEL podA after uninstall" cni DEL "$M" podA "$(meshaccel_conf "$SMC" "")" 1
check "  … sysctl restored" test "$(inns podA cat /proc/sys/net/smc/wmem)" = "$host_wmem"
check "  … pod ETH entry gone" test "$(pnet_of podA)" = "[]"
check "  … SMC record gone" test -z "$(ls "$STATE"/smc/*.json 2>/dev/null)"

echo "# 5. a UEID that was there before meshaccel stays"
check "operator adds UEID $UEID" $T ueid add $UEID
check "ADD podA" cni ADD "$M" podA "$(meshaccel_conf "$SMC" "$PREV_A")" 1
check "  … does not record the UEID as its own" test ! -e "$STATE/smc-ueids/$UEID"
check "  … doctor does not list it as meshaccel's" test "$("$M" doctor --json --state-dir "$STATE" | json 'd["ueidsAddedByMeshaccel"]')" = "[]"
check "meshaccel-installer uninstall" uninstall
check "UEID $UEID still there" has_ueid
check "DEL podA" cni DEL "$M" podA "$(meshaccel_conf "$SMC" "")" 1
$T ueid del $UEID
finish
