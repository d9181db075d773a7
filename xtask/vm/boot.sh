#!/bin/bash
# usage: boot.sh <unpacked linux-image dir> <outdir (shared rw)> <command...>
# Boots that kernel in qemu with the host's / shared read-only over 9p, runs <command> as root (cwd = outdir),
# prints the console, exits with the command's exit status (255: no status came back, e.g. a panic or
# VM_TIMEOUT). ACCEL=kvm where /dev/kvm runs stock kernels (tcg by default: this machine's paravirtual
# /dev/kvm hangs them). VM_MEM (default 2G), VM_TIMEOUT (seconds, default 2400). VM_KEEP: host directories
# (space-separated) the VM must see although they lie under a directory it mounts a tmpfs on (/tmp, /var/tmp,
# /root, /boot): a checkout in /tmp, say.
# `cargo xtask test --kernel` runs this (xtask/src/vm.rs); adapted from the team's tools/mkvm.sh.
set -eu
KD=$(realpath "$1"); OUT=$(realpath "$2"); shift 2
MB=$KD; [ -d "$KD/lib/modules" ] || MB=$KD/usr          # bookworm debs: lib/modules, trixie debs: usr/lib/modules
KVER=$(ls "$MB/lib/modules"); KIMG="$KD/boot/vmlinuz-$KVER"
[ -f "$KIMG" ] || KIMG="$MB/lib/modules/$KVER/vmlinuz"      # 7.x debs (linux-binary-*): the image sits with the modules
[ -f "$MB/lib/modules/$KVER/modules.dep" ] || depmod -b "$MB" "$KVER"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir -p "$W/bin" "$W/mods"; cp /bin/busybox "$W/bin/"
# modules needed before the root is mounted (empty where built in); xz/zst ones are unpacked for busybox insmod
for x in virtio_pci 9pnet_virtio 9p; do modprobe -d "$MB" -S "$KVER" --show-depends $x 2>/dev/null; done |
 awk '$1=="insmod"{print $2}' | awk '!s[$0]++' | while read -r m; do
  b=$(basename "$m"); case "$b" in *.xz) xz -dc "$m" > "$W/mods/${b%.xz}";; *.zst) zstd -qdc "$m" > "$W/mods/${b%.zst}";; *) cp "$m" "$W/mods/";; esac
  echo "$b" | sed 's/\.ko\..*$/.ko/' >> "$W/mods.order"; done
touch "$W/mods.order"
cat > "$OUT/.vm-stage2" <<S2
export PATH=/run/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
cd "$OUT"; ip link set lo up; echo "@@ boot-to-shell \$(cut -d' ' -f1 /proc/uptime)s"
( $* ); rc=\$?
echo "@@RC=\$rc"; sync; echo o > /proc/sysrq-trigger; sleep 30 2>/dev/null
S2
cat > "$W/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin; export PATH=/bin
mkdir -p /proc /sys /dev /mnt; mount -t proc p /proc; mount -t sysfs s /sys; mount -t devtmpfs d /dev
for m in \$(cat /mods.order); do insmod /mods/\$m; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /mnt
mount -t tmpfs t /mnt/run; mkdir -p /mnt/run/kmods/lib/modules/$KVER /mnt/run/kboot
mount --bind /mnt$MB/lib/modules/$KVER /mnt/run/kmods/lib/modules/$KVER; cp /mnt$KD/boot/config-$KVER /mnt/run/kboot/ 2>/dev/null
n=0; for k in ${VM_KEEP:-}; do n=\$((n+1)); mkdir -p /mnt/run/keep/\$n; mount --bind /mnt\$k /mnt/run/keep/\$n; done
for d in tmp var/tmp root boot; do mount -t tmpfs t /mnt/\$d; done; cp /mnt/run/kboot/* /mnt/boot/ 2>/dev/null
n=0; for k in ${VM_KEEP:-}; do n=\$((n+1)); mkdir -p /mnt\$k; mount --bind /mnt/run/keep/\$n /mnt\$k; done
# a writable copy of the host's /etc (4 MB), e.g. for /etc/netns/NAME that tests create
mkdir -p /mnt/run/etc; cp -a /mnt/etc/. /mnt/run/etc/ 2>/dev/null; mount --bind /mnt/run/etc /mnt/etc
mount -t proc p /mnt/proc; mount -t sysfs s /mnt/sys; mount -t devtmpfs d /mnt/dev; mkdir -p /mnt/dev/pts /mnt/dev/shm
mount -t devpts p /mnt/dev/pts; mount -t tmpfs t /mnt/dev/shm; mount -t bpf b /mnt/sys/fs/bpf; mount -t tracefs t /mnt/sys/kernel/tracing 2>/dev/null
mount -t cgroup2 c /mnt/sys/fs/cgroup 2>/dev/null
mkdir -p /mnt$OUT; mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /mnt$OUT
mkdir -p /mnt/run/bin; printf '#!/bin/sh\nexec /sbin/modprobe -d /run/kmods -S $KVER "\$@"\n' > /mnt/run/bin/modprobe; chmod +x /mnt/run/bin/modprobe
echo /run/bin/modprobe > /proc/sys/kernel/modprobe
exec chroot /mnt /bin/sh $OUT/.vm-stage2
INIT
chmod +x "$W/init"
(cd "$W" && find . | busybox cpio -o -H newc 2>/dev/null) > "$W/initrd"
# Software emulation runs both vCPUs in one host thread (thread=single): with one thread per vCPU,
# 7.3's int3 patching of the XDP dispatcher (bpf_dispatcher_xdp_func) oopsed under concurrent
# BPF_PROG_TEST_RUN on two CPUs. VM_TCG_THREAD=multi to compare.
ACC=${ACCEL:-tcg}; [ "$ACC" = tcg ] && ACC="tcg,thread=${VM_TCG_THREAD:-single}"
timeout -s KILL "${VM_TIMEOUT:-2400}" qemu-system-x86_64 -machine q35 -accel "$ACC" -cpu max -m "${VM_MEM:-2G}" -smp 2 -nographic -no-reboot -nodefaults \
  -serial stdio -kernel "$KIMG" -initrd "$W/initrd" -append "console=ttyS0 quiet loglevel=1 panic=-1" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$OUT",mount_tag=out,security_model=none,multidevs=remap </dev/null | sed -u -e 's/\x1b//g' -e 's/^.*Booting from ROM\.\.\.//' | tee "$W/console" | grep -a --line-buffered -v -E '^@@RC=|SeaBIOS|^c\[[?0-9;a-zA-Z]*$' || true
rc=$(grep -a -o '@@RC=[0-9]*' "$W/console" | tail -1 | cut -d= -f2); rm -f "$OUT/.vm-stage2"; exit "${rc:-255}"
