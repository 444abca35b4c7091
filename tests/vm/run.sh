#!/usr/bin/env bash
# Runs one guest test script in the SMC VM (Debian 6.12 kernel under qemu TCG) against the
# host's freshly built binaries, under a hard timeout. Exit 0 only if the script passed
# and no task was left in D state.
#   usage: tests/vm/run.sh [GUEST_SCRIPT [ARG…]] (default: tests/vm/guest/smc.sh; the ARGs
#          reach the guest script as the array VM_ARGS)
# A guest script that runs compiled integration tests names them in one line
#   # vm-cargo-tests: <test target> …
# they are built here and passed to the guest as TEST_<target>=<executable>, together with
# the binaries their harness runs (MESHACCEL_TESTKIT), in the env file.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# Absolute: the guest runs it from its own / (the host root, shared).
script=$(realpath "${1:-$here/guest/smc.sh}")
VM_CACHE=${VM_CACHE:-/var/cache/meshaccel-vm}
VM_TIMEOUT=${VM_TIMEOUT:-540}

for tool in qemu-system-x86_64 busybox; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run tests/setup" >&2; exit 1; }
done
initrd=$(bash "$here/build-initramfs.sh")
# The guest runs what the host built (over the read-only 9p share of /); MESHACCEL_BIN
# selects a prebuilt plugin instead.
if [[ -z ${MESHACCEL_BIN:-} ]]; then
  (cd "$repo" && cargo build -q -p meshaccel-cni --bin meshaccel)
  MESHACCEL_BIN=${CARGO_TARGET_DIR:-$repo/target}/debug/meshaccel
fi

out=$(mktemp -d /tmp/meshaccel-vm.XXXXXX)
trap 'rm -rf "$out"' EXIT
# The installer's uninstall, for the guest scripts that test it (INSTALLER_BIN selects a prebuilt one).
if [[ -z ${INSTALLER_BIN:-} ]]; then
  (cd "$repo" && cargo build -q -p meshaccel-installer --bin meshaccel-installer)
  INSTALLER_BIN=${CARGO_TARGET_DIR:-$repo/target}/debug/meshaccel-installer
fi
printf 'MESHACCEL_BIN=%q\nREPO=%q\nINSTALLER_BIN=%q\n' "$MESHACCEL_BIN" "$repo" "$INSTALLER_BIN" > "$out/env"
vm_args=("${@:2}")
echo "VM_ARGS=(${vm_args[*]@Q})" >> "$out/env"
read -ra cargo_tests <<<"$(sed -n 's/^# vm-cargo-tests: *//p' "$script")"
if [[ ${#cargo_tests[@]} -gt 0 ]]; then
  # Built with the plugin's profile (debug); the guest cannot build (read-only share, TCG).
  targets=(); for t in "${cargo_tests[@]}"; do targets+=(--test "$t"); done
  (cd "$repo" && cargo test -q -p meshaccel-tests --no-run --message-format=json "${targets[@]}") |
    python3 -c '
import json, shlex, sys
for line in sys.stdin:
    a = json.loads(line)
    if a.get("reason") != "compiler-artifact" or not a.get("executable"):
        continue
    name, kind = a["target"]["name"], a["target"]["kind"]
    if kind == ["test"]:
        print("TEST_%s=%s" % (name, shlex.quote(a["executable"])))
    elif name == "meshaccel-testkit":
        print("MESHACCEL_TESTKIT=%s" % shlex.quote(a["executable"]))
' >> "$out/env"
  for t in "${cargo_tests[@]}"; do
    grep -q "^TEST_$t=" "$out/env" || { echo "vm: test target $t was not built" >&2; exit 1; }
  done
fi
# A boot that dies or hangs before /init starts the test script (qemu TCG has been seen
# to oops in early boot, ~1 boot in 17 on a loaded machine) is no verdict on the test: it is
# retried, at most VM_BOOT_TRIES times, and logged. Once the script started, its result is
# the result: nothing is retried after that.
VM_BOOT_TRIES=${VM_BOOT_TRIES:-3}
VM_BOOT_TIMEOUT=${VM_BOOT_TIMEOUT:-180}
boot() {
  rm -f "$out"/{started,rc,test.log,dstate,dmesg.txt,console.txt}
  timeout --kill-after=10 "$VM_TIMEOUT" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
    -kernel "$VM_CACHE/vmlinuz" -initrd "$initrd" \
    -append "console=ttyS0 quiet panic=-1 meshaccel.test=$script" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs local,path="$out",mount_tag=out,security_model=none \
    -nographic -nic none -no-reboot -serial mon:stdio </dev/null > "$out/console.txt" 2>&1 &
  local pid=$! waited=0
  while [[ ! -e $out/started ]] && kill -0 "$pid" 2>/dev/null && ((waited < VM_BOOT_TIMEOUT)); do
    sleep 1; waited=$((waited + 1))
  done
  if [[ ! -e $out/started ]]; then
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; qrc=$?
    if ((waited >= VM_BOOT_TIMEOUT)); then why="hung: no test started within ${VM_BOOT_TIMEOUT}s"
    else why="died before the test started"; fi
    return 1
  fi
  set +e; wait "$pid"; qrc=$?; set -e
  return 0
}
qrc=0 why=
for try in $(seq 1 "$VM_BOOT_TRIES"); do
  echo "vm: booting ($script, try $try of $VM_BOOT_TRIES, timeout ${VM_TIMEOUT}s)" >&2
  if boot; then booted=1; break; fi
  booted=0
  echo "vm: boot $try failed: $why; qemu exit $qrc; guest console (last lines):" >&2
  tail -30 "$out/console.txt" >&2
done
if ((!booted)); then
  echo "vm: FAILED: the guest never started the test in $VM_BOOT_TRIES boots" >&2
  [[ -n ${VM_KEEP:-} ]] && cp -r "$out" "$VM_KEEP"
  exit 1
fi
cat "$out/test.log" 2>/dev/null || true
fail=0
if [[ $qrc -eq 124 || $qrc -eq 137 ]]; then
  echo "vm: FAILED: hard timeout (${VM_TIMEOUT}s) — hung guest?" >&2; fail=1
fi
if [[ ! -s $out/rc ]]; then
  echo "vm: FAILED: no result (guest console follows)" >&2; tail -50 "$out/console.txt" >&2; fail=1
elif [[ $(cat "$out/rc") != 0 ]]; then
  echo "vm: FAILED: guest script exited $(cat "$out/rc")" >&2; fail=1
fi
if [[ -s $out/dstate ]]; then
  echo "vm: FAILED: tasks in D state at the end:" >&2; cat "$out/dstate" >&2; fail=1
fi
if grep -q "blocked for more than" "$out/dmesg.txt" 2>/dev/null; then
  echo "vm: FAILED: hung task reported by the kernel:" >&2; grep -A3 "blocked for more than" "$out/dmesg.txt" >&2; fail=1
fi
[[ -n ${VM_KEEP:-} ]] && cp -r "$out" "$VM_KEEP"
exit $fail
