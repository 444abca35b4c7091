#!/usr/bin/env bash
# Boots the test VM N times with a trivial guest script and counts the boots that never
# reached it (panic or hang in early boot), as tests/vm/run.sh would see them.
#   usage: tests/vm/boot-rate.sh [N=30] [TRIES=1]   (TRIES=3: the rate run.sh's retry leaves)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
n=${1:-30} tries=${2:-1}
failed=0 start=$SECONDS
for i in $(seq 1 "$n"); do
  # The trivial guest runs no meshaccel binary: nothing is built.
  if MESHACCEL_BIN=/bin/true INSTALLER_BIN=/bin/true VM_BOOT_TRIES=$tries VM_TIMEOUT=120 bash "$here/run.sh" "$here/guest/boot.sh" >/tmp/boot-rate.$$.log 2>&1; then
    r=ok
  else
    r=FAILED; failed=$((failed + 1)); grep -E '^vm: ' /tmp/boot-rate.$$.log | tail -3 >&2
  fi
  retried=$(grep -c 'vm: boot [0-9]* failed' /tmp/boot-rate.$$.log)
  echo "boot-rate: $i/$n $r (failed boots retried: $retried) load $(cut -d' ' -f1 /proc/loadavg)"
done
rm -f /tmp/boot-rate.$$.log
echo "boot-rate: $failed of $n runs failed (VM_BOOT_TRIES=$tries), $((SECONDS - start)) s"
