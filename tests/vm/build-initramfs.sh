#!/usr/bin/env bash
# Builds the SMC test VM's kernel + initramfs from Debian's linux-image-6.12-amd64
# (not -cloud: that flavour lacks rdma_rxe and 9p). Cached under $VM_CACHE; idempotent.
#   out: $VM_CACHE/vmlinuz, $VM_CACHE/initramfs-<hash of /init and this script>.cpio.gz,
#        whose path is printed on stdout. One file per hash: worktrees with different
#        module lists share the cache without rebuilding each other's (or a booting VM's).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VM_CACHE=${VM_CACHE:-/var/cache/meshaccel-vm}
META=linux-image-6.12-amd64
# Loaded in this order by /init (dependencies first). configfs … rdma_ucm: user-space RDMA
# CM (/dev/infiniband/rdma_cm), which the reachability probe and its responder use.
MODULES=(crc32_generic crc32-pclmul ib_core ib_uverbs configfs iw_cm ib_cm rdma_cm rdma_ucm
         udp_tunnel ip6_udp_tunnel rdma_rxe
         smc smc_diag dummy ipvlan veth llc stp bridge netfs 9pnet 9pnet_virtio 9p
         # iptables in the guest: nft (smc-broken.sh counts RoCE packets) and the legacy
         # mangle table with TCPOPTSTRIP (smc-doctor.sh: a path that strips SMC's option)
         crc32c_generic libcrc32c nfnetlink nf_tables x_tables nft_compat xt_tcpudp
         xt_TCPOPTSTRIP ip_tables iptable_mangle)

mkdir -p "$VM_CACHE"
cd "$VM_CACHE"
# The meta package names the versioned one (linux-image-6.12.x+debNN-amd64).
pkg=$(apt-cache depends "$META" 2>/dev/null | awk '/Depends: linux-image-6/ {print $2; exit}')
[[ -n $pkg ]] || { echo "apt does not know $META (run apt-get update)" >&2; exit 1; }
# Rebuilt when /init or this script (the module list) changes.
hash=$(cat "$here/init" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)
initrd="$VM_CACHE/initramfs-$hash.cpio.gz"
if [[ -s $initrd && -s vmlinuz && -e kernel-$pkg ]]; then
  echo "$VM_CACHE: $pkg ready" >&2
  echo "$initrd"
  exit 0
fi
if ! ls "$pkg"_*.deb >/dev/null 2>&1; then
  echo "apt-get download $pkg" >&2
  apt-get download -q "$pkg" >/dev/null 2>&1 || apt-get download "$pkg"
fi
work=$(mktemp -d "$VM_CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
mkdir kernel root
dpkg -x "$VM_CACHE/$pkg"_*.deb kernel
kver=$(ls kernel/lib/modules)
cp "kernel/boot/vmlinuz-$kver" vmlinuz.tmp && mv vmlinuz.tmp "$VM_CACHE/vmlinuz" && touch "$VM_CACHE/kernel-$pkg"

mkdir -p root/{bin,sbin,proc,sys,dev,host,out,tmp,etc,lib/modules}
cp /bin/busybox root/bin/busybox
for a in sh mount umount mkdir insmod chroot poweroff cat echo sleep ls sysctl grep sed dmesg sync; do ln -sf busybox "root/bin/$a"; done
for m in "${MODULES[@]}"; do
  f=$(find "kernel/lib/modules/$kver" -name "$m.ko*" | head -1)
  [[ -n $f ]] || { echo "module $m missing from $pkg" >&2; exit 1; }
  case $f in *.xz) xz -dc "$f" ;; *.zst) zstd -dc "$f" ;; *) cat "$f" ;; esac > "root/lib/modules/$m.ko"
done
printf '%s\n' "${MODULES[@]}" > root/lib/modules/order
cp "$here/init" root/init && chmod +x root/init
# Renamed into place: a VM booting from an older file keeps reading that one.
(cd root && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > initramfs.tmp
mv initramfs.tmp "$initrd"
echo "$VM_CACHE: built $initrd for $pkg ($(du -h "$initrd" | cut -f1))" >&2
echo "$initrd"
