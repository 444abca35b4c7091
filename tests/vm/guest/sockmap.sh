#!/bin/bash
# Same-node sockmap acceleration on a kernel that allows tracing programs (Debian 6.12 in
# qemu; the CI kernel refuses them): the fexit backlog accounting must load, and the
# integration tests that need it run here, compiled on the host. Run by tests/vm/run.sh.
#   backpressure_bounds_and_resumes_like_plain_tcp (all, ignored ones included), and
#   blocking_reads_wait_like_plain_tcp and connection_ends_like_plain_tcp: 6.12 shares 6.18's
#   tcp_bpf_recvmsg EAGAIN behaviours, so meshaccel's keeping blocking ends plain must hold
#   there too (the kernel layout comes from the guest kernel's BTF).
# vm-cargo-tests: backpressure_bounds_and_resumes_like_plain_tcp blocking_reads_wait_like_plain_tcp connection_ends_like_plain_tcp
source "$(dirname "$0")/lib.sh"
export PATH=/usr/lib/cni:/usr/sbin:/usr/bin:/sbin:/bin MESHACCEL_BIN MESHACCEL_TESTKIT RUST_BACKTRACE=1

# What the test harness expects of a node (vm/init mounts most of it already).
ensure_mount() { # FSTYPE DIR
  mkdir -p "$2"
  mountpoint -q "$2" || mount -t "$1" "$1" "$2" || echo "# cannot mount $1 on $2"
}
ensure_mount cgroup2 /sys/fs/cgroup
ensure_mount bpf /sys/fs/bpf
ensure_mount tmpfs /run
ensure_mount tmpfs /run/netns     # /var/run is /run
ensure_mount tmpfs /tmp
ensure_mount tracefs /sys/kernel/tracing
check "cgroup2 at /sys/fs/cgroup" test "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs
check "bpffs at /sys/fs/bpf" test "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs
echo "# kernel $(uname -r); tcp_bpf_recvmsg: kallsyms $(grep -c ' tcp_bpf_recvmsg$' /proc/kallsyms)," \
  "ftrace-attachable $(grep -c '^tcp_bpf_recvmsg\b' /sys/kernel/tracing/available_filter_functions 2>/dev/null)"

echo "# 1. The first accelerated pod loads the programs, fexit accounting included"
ROOT=/sys/fs/bpf/meshaccel-vm CG=/sys/fs/cgroup/meshaccel-vm RUN=/run/meshaccel-vm
UID1=00000000-0000-4000-8000-000000000001
mkdir -p "$CG/kubepods/besteffort/pod$UID1"
ip netns add acct
BRIDGE='{"cniVersion":"1.0.0","name":"vmnet","type":"bridge","bridge":"mavm0","isGateway":true,"ipMasq":false,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.99.0.0/24"}]],"dataDir":"'$RUN'/ipam"}}'
prev=$(cni ADD $CNI_BIN/bridge acct "$BRIDGE" 01)
conf=$(python3 -c '
import json, sys
print(json.dumps({"cniVersion": "1.0.0", "name": "vmnet", "type": "meshaccel", "sockmap": {"enabled": True},
  "bpffsRoot": sys.argv[1], "cgroupRoot": sys.argv[2], "stateDir": sys.argv[3] + "/state",
  "log": {"file": sys.argv[3] + "/meshaccel.log", "level": "debug"}, "failurePolicy": "closed",
  "prevResult": json.loads(sys.argv[4])}))' "$ROOT" "$CG" "$RUN" "$prev")
out=$(cni ADD "$M" acct "$conf" 01); rc=$?
check "ADD of an accelerated pod succeeds" test $rc -eq 0
status=$("$M" status --json --bpffs-root "$ROOT" --state-dir "$RUN/state")
echo "# status: $status"
check "status: loaded" test "$(echo "$status" | json 'd["loaded"]')" = True
check "status: backpressureAccounting true (fexit on tcp_bpf_recvmsg attached)" \
  test "$(echo "$status" | json 'd["backpressureAccounting"]')" = True
[[ $rc -eq 0 ]] || { echo "# ADD answered: $out"; cat "$RUN/meshaccel.log"; }
cni DEL "$M" acct "$conf" 01 >/dev/null
cni DEL $CNI_BIN/bridge acct "$BRIDGE" 01 >/dev/null
ip netns del acct; ip link del mavm0 2>/dev/null
rm -rf "$ROOT"; rmdir "$CG/kubepods/besteffort/pod$UID1" "$CG/kubepods/besteffort" "$CG/kubepods" "$CG"

# Samples each test node's counters (its bpffs root goes with the node) for the report.
sample_stats() {
  while sleep 2; do
    for r in /sys/fs/bpf/meshaccel-test-*; do
      [[ -e $r/maps ]] && "$M" stats --json --bpffs-root "$r" > /tmp/sample 2>/dev/null &&
        mv /tmp/sample "/tmp/stats.${r##*/}"
    done
  done
}

# run_tests TARGET: each test of the compiled target, ignored ones included, on its own (a
# clear verdict per test, output uncaptured).
run_tests() {
  local target=$1 which=--include-ignored exe t rc start
  exe=TEST_$target; exe=${!exe}
  echo "# 2. $target"
  for t in $("$exe" --list "$which" 2>/dev/null | sed -n 's/: test$//p'); do
    rm -f /tmp/stats.*
    start=$SECONDS
    (cd /tmp && timeout 240 "$exe" "$which" --exact "$t" --test-threads 1 --nocapture 2>&1); rc=$?
    for s in /tmp/stats.*; do [[ -e $s ]] && echo "# counters of ${s#/tmp/stats.} (last sample): $(cat "$s")"; done
    echo "# $t: exit $rc after $((SECONDS - start)) s"
    check "$target::$t" test $rc -eq 0
  done
}

sample_stats & sampler=$!
for target in backpressure_bounds_and_resumes_like_plain_tcp blocking_reads_wait_like_plain_tcp connection_ends_like_plain_tcp; do
  run_tests "$target"
done
kill $sampler
echo "# guest script: ${SECONDS} s"
finish
