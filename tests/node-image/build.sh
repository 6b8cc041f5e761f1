#!/bin/bash
# Build, or reuse from the cache, the Debian 12 (bookworm, amd64) node image of
# rackseed's first-boot test tier: a kernel, an initramfs and two qcow2 disks
# that are the members of an md RAID1 holding an XFS root with ZFS (dkms),
# mdadm, bonding/VLAN/bridge tools, sanoid/syncoid, sshd and the node shim.
#
# Usage: tests/node-image/build.sh            build or reuse; the last line on
#                                             stdout is the output directory
#        tests/node-image/build.sh --host-packages
#                                             print the Debian packages the
#                                             host needs, and exit
#
# Environment:
#   RACKSEED_CACHE       cache root (default /var/cache/rackseed-tests); the
#                        image goes to $RACKSEED_CACHE/node-image/<hash>/
#   RACKSEED_MIRROR      Debian mirror URI (default: the one in the host's APT
#                        sources that serves bookworm)
#   RACKSEED_KEEP_BUILD  set to 1 to keep the temporary build directory of a
#                        failed build
#
# Runs as root (debootstrap, loop mounts). Everything but the final path goes
# to stderr. See README.md in this directory for the layout and timings.
set -euo pipefail
export LC_ALL=C
umask 022

# Debian packages the host needs for this script (the project's set-up script
# installs them; this script installs whichever are missing).
HOST_PACKAGES="debootstrap debian-archive-keyring ca-certificates qemu-system-x86 qemu-utils xfsprogs mount util-linux"

# Packages of the image, installed with --no-install-recommends in two steps
# (ZFS last, so that its dkms build is timed on its own). busybox is only a
# Recommends of initramfs-tools, but without it the initramfs has no `rm` and
# mdadm's local-bottom script fails.
IMAGE_PACKAGES="linux-image-amd64 linux-headers-amd64 initramfs-tools busybox zstd systemd-sysv udev dbus kmod procps
mdadm xfsprogs fdisk parted dosfstools
ifupdown isc-dhcp-client ifenslave vlan bridge-utils iproute2 iputils-ping ethtool netbase
openssh-server openssh-client wget curl ca-certificates
sanoid mbuffer lzop pv
dmidecode efibootmgr debconf-utils"
ZFS_PACKAGES="zfs-dkms zfsutils-linux"

SUITE=bookworm
ARCH=amd64
NODE_HOSTNAME=node
ROOT_FS_SIZE=4G      # the root XFS as built on the host (grown to fill md0 later)
ROOT_DISK_SIZE=8G    # virtual size of each RAID1 member disk (qcow2)
BUILD_VM_TIMEOUT=900

here=$(cd "$(dirname "$0")" && pwd)

log() {
    printf 'node-image: %s\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

if [ "${1:-}" = "--host-packages" ]; then
    echo "$HOST_PACKAGES"
    exit 0
fi
[ "$#" -eq 0 ] || die "unknown argument $1 (usage: build.sh [--host-packages])"

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, loop mounts)"

# Mount nothing in the host's mount namespace: a process that copies it
# meanwhile (`ip netns exec`, `unshare -m` of a parallel test) would keep our
# loop mounts alive after we unmount them, and the build VM would then see a
# stale disk. In a private namespace every mount also goes away with us.
if [ "${RACKSEED_NODE_IMAGE_PRIVATE_NS:-}" != 1 ]; then
    RACKSEED_NODE_IMAGE_PRIVATE_NS=1 exec unshare --mount --propagation private -- "$0" "$@"
fi

# From here on stdout is stderr; fd 3 is the real stdout for the final path.
exec 3>&1 1>&2

install_missing_host_packages() {
    local missing=() pkg
    for pkg in $HOST_PACKAGES; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != installed ]; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing host packages: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" ||
            die "cannot install host packages ${missing[*]}"
    fi
}

# Prints the first URI of the host's APT sources (deb822 .sources files, then
# one-line .list files) that serves suite $1 with type deb.
mirror_from_apt_sources() {
    local suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$suite" '
            function flush(    u) {
                gsub(/[ \t]+/, " ", suites)
                if ((" " types " ") ~ / deb / && index(" " suites " ", " " suite " ") &&
                    tolower(enabled) != "no" && uris != "") {
                    split(uris, u, /[ \t]+/)
                    print u[1]
                }
                types = suites = uris = enabled = key = ""
            }
            /^#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ {
                if (key == "uris") uris = uris " " $0
                else if (key == "suites") suites = suites " " $0
                else if (key == "types") types = types " " $0
                next
            }
            {
                i = index($0, ":"); if (!i) next
                key = tolower(substr($0, 1, i - 1)); value = substr($0, i + 1)
                gsub(/^[ \t]+|[ \t]+$/, "", value)
                if (key == "types") types = value
                else if (key == "suites") suites = value
                else if (key == "uris") uris = value
                else if (key == "enabled") enabled = value
            }
            END { flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v suite="$suite" '
            { sub(/#.*/, "") }
            $1 == "deb" {
                line = $0
                sub(/^[ \t]*deb[ \t]+/, "", line)
                if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
                split(line, w, /[ \t]+/)
                if (w[2] == suite) print w[1]
            }
        ' "$f"
    done
}

# ---------------------------------------------------------------------------
# inputs, cache key, cache hit

mirror=${RACKSEED_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(mirror_from_apt_sources "$SUITE" | grep -v '^cdrom:' | head -n 1 || true)
    [ -n "$mirror" ] || die "no APT source of the host serves $SUITE; set RACKSEED_MIRROR to a Debian mirror URI"
fi
mirror=${mirror%/}

cache_inputs() {
    local f
    printf 'suite %s\narch %s\nmirror %s\n' "$SUITE" "$ARCH" "$mirror"
    printf 'packages %s\nzfs %s\n' "$IMAGE_PACKAGES" "$ZFS_PACKAGES"
    for f in "$here/build.sh" "$here"/files/*; do
        printf 'file %s\n' "${f#"$here"/}"
        cat "$f"
    done
}
hash=$(cache_inputs | sha256sum | cut -c1-16)
cache_root=${RACKSEED_CACHE:-/var/cache/rackseed-tests}/node-image
out_dir=$cache_root/$hash

if [ -f "$out_dir/DONE" ]; then
    log "reusing $out_dir"
    echo "$out_dir" >&3
    exit 0
fi

install_missing_host_packages
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
    log "another node-image build is running; waiting for it"
    flock 9
fi
if [ -f "$out_dir/DONE" ]; then
    log "reusing $out_dir (built meanwhile)"
    echo "$out_dir" >&3
    exit 0
fi
# A directory without DONE is the remains of a crashed rename; replace it.
[ ! -e "$out_dir" ] || rm -rf "$out_dir"

log "building the node image $hash (suite $SUITE, mirror $mirror)"

# ---------------------------------------------------------------------------
# temporary state and its cleanup

tmp=$(mktemp -d "$cache_root/.build-$hash.XXXXXX")
stage_img=$tmp/stage.img
root=$tmp/root
logs=$tmp/result/logs
mkdir -p "$root" "$logs" "$tmp/result"
qemu_pid=
mounts=()
succeeded=0

mount_tracked() {
    mount "$@"
    mounts+=("${*: -1}")
}

unmount_all() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" ||
            log "warning: cannot unmount ${mounts[i]}"
    done
    mounts=()
}

# Fails unless no loop device still holds the stage image (loop mounts use
# autoclear: the device goes when its file system is unmounted).
stage_released() {
    local i
    for i in $(seq 50); do
        [ -n "$(losetup -j "$stage_img")" ] || return 0
        sleep 0.1
    done
    die "$stage_img is still attached: $(losetup -j "$stage_img")"
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid"
        wait "$qemu_pid"
    fi
    unmount_all
    if [ "$succeeded" -eq 0 ]; then
        if [ "${RACKSEED_KEEP_BUILD:-0}" = 1 ]; then
            log "build failed; kept $tmp"
        else
            if [ -d "$logs" ]; then
                rm -rf "$cache_root/failed-$hash.logs"
                mv "$logs" "$cache_root/failed-$hash.logs" &&
                    log "build failed; logs in $cache_root/failed-$hash.logs"
            fi
            rm -rf "$tmp"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

declare -A took=()
phase_start=0
phase() {
    phase_start=$(date +%s)
    log "==> $1"
}
phase_done() {
    took[$1]=$(($(date +%s) - phase_start))
    log "<== $1 took ${took[$1]} s"
}

# Runs "$@" with output to $logs/$1.log; on failure shows its tail.
logged() {
    local name=$1
    shift
    if ! "$@" >"$logs/$name.log" 2>&1; then
        tail -n 40 "$logs/$name.log" >&2
        die "$name failed (log: $logs/$name.log)"
    fi
}

in_chroot() {
    chroot "$root" /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TMPDIR=/tmp \
        DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true "$@"
}

apt_install() {
    # shellcheck disable=SC2086 # package lists are words
    in_chroot apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-unsafe-io -o Dpkg::Options::=--force-confold "$@"
}

# ---------------------------------------------------------------------------
# 1. debootstrap onto the root XFS (a loop-mounted sparse file, the "stage")

# Both UUIDs are chosen here, so that fstab, mdadm.conf and the initramfs are
# final before the build VM creates the array.
root_uuid=$(cat /proc/sys/kernel/random/uuid)
md_uuid=$(tr -d - </proc/sys/kernel/random/uuid)
md_uuid=${md_uuid:0:8}:${md_uuid:8:8}:${md_uuid:16:8}:${md_uuid:24:8}

truncate -s "$ROOT_FS_SIZE" "$stage_img"
mkfs.xfs -q -m uuid="$root_uuid" -L root "$stage_img"
mount_tracked -t xfs -o loop "$stage_img" "$root"

phase debootstrap
logged debootstrap debootstrap --arch="$ARCH" --variant=minbase --components=main,contrib \
    "$SUITE" "$root" "$mirror"
phase_done debootstrap

mount_tracked -t proc proc "$root/proc"
mount_tracked -t sysfs sysfs "$root/sys"
mount_tracked --bind /dev "$root/dev"
mount_tracked --bind /dev/pts "$root/dev/pts"

printf '#!/bin/sh\n# no daemons start while the image is built\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
printf 'deb %s %s main contrib\n' "$mirror" "$SUITE" >"$root/etc/apt/sources.list"
mkdir -p "$root/etc/initramfs-tools/conf.d"
printf '# no swap, no hibernation: do not look for a resume device\nRESUME=none\n' \
    >"$root/etc/initramfs-tools/conf.d/resume"

# zfs-dkms asks whether to stop when it cannot tell the running kernel (here:
# the host's, in a chroot); its licence note is a plain note, seen here.
in_chroot debconf-set-selections <<'EOF'
zfs-dkms zfs-dkms/stop-build-for-unknown-kernel boolean false
zfs-dkms zfs-dkms/stop-build-for-32bit-kernel boolean false
zfs-dkms zfs-dkms/note-incompatible-licenses note
EOF

# ---------------------------------------------------------------------------
# 2. packages

phase packages
logged apt-update in_chroot apt-get update -q
# shellcheck disable=SC2086 # package lists are words
logged apt-install apt_install $IMAGE_PACKAGES
phase_done packages

kver=$(cd "$root/lib/modules" && ls)
[ "$(printf '%s\n' "$kver" | wc -l)" -eq 1 ] || die "expected one kernel in the image, found: $kver"
[ -d "$root/usr/src/linux-headers-$kver" ] || die "no headers for $kver in the image"

phase zfs-dkms
# shellcheck disable=SC2086 # package lists are words
logged apt-install-zfs apt_install $ZFS_PACKAGES
phase_done zfs-dkms

zfs_ko=$(find "$root/lib/modules/$kver" -name 'zfs.ko*' | head -n 1)
[ -n "$zfs_ko" ] || die "zfs-dkms built no zfs module for $kver (see $logs/apt-install-zfs.log)"
zfs_version=$(in_chroot modinfo -k "$kver" -F version zfs)
log "kernel $kver, zfs module $zfs_version"

# ---------------------------------------------------------------------------
# 3. configuration

phase configure
install -m 0755 "$here/files/rackseed-node-shim" "$root/usr/local/sbin/rackseed-node-shim"
install -D -m 0755 "$here/files/in-target" "$root/usr/local/lib/rackseed-node-shim/bin/in-target"
install -m 0644 "$here/files/rackseed-node-shim.service" "$root/etc/systemd/system/"
install -m 0644 "$here/files/rackseed-ssh-hostkeys.service" "$root/etc/systemd/system/"
install -D -m 0644 "$here/files/serial-getty-autologin.conf" \
    "$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"
install -D -m 0644 "$here/files/sshd-rackseed.conf" "$root/etc/ssh/sshd_config.d/rackseed.conf"
in_chroot systemctl enable rackseed-node-shim.service rackseed-ssh-hostkeys.service \
    serial-getty@ttyS0.service

echo "$NODE_HOSTNAME" >"$root/etc/hostname"
cat >"$root/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$NODE_HOSTNAME
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
cat >"$root/etc/network/interfaces" <<'EOF'
# The loopback network interface
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
EOF
mkdir -p "$root/etc/network/interfaces.d"
cat >"$root/etc/network/interfaces.d/eth0" <<'EOF'
allow-hotplug eth0
iface eth0 inet dhcp
EOF
install -d -m 0700 "$root/root/.ssh"
in_chroot passwd --lock root >/dev/null

# Root on md0 (made in the build VM with exactly this array UUID). The
# initramfs is made here, at native speed rather than under TCG: mdadm's hook
# only copies mdadm, its udev rules and this mdadm.conf.
cat >"$root/etc/fstab" <<EOF
# <file system> <mount point> <type> <options> <dump> <pass>
# / is XFS on /dev/md0, a RAID1 of the first partition of vda and vdb
UUID=$root_uuid / xfs defaults 0 1
EOF
[ -f "$root/etc/mdadm/mdadm.conf" ] || die "mdadm left no /etc/mdadm/mdadm.conf"
sed -i '/^ARRAY /d' "$root/etc/mdadm/mdadm.conf"
echo "ARRAY /dev/md0 metadata=1.2 UUID=$md_uuid" >>"$root/etc/mdadm/mdadm.conf"
logged update-initramfs in_chroot update-initramfs -u -k all
initrd_listing=$(in_chroot lsinitramfs "/boot/initrd.img-$kver")
for needed in sbin/mdadm etc/mdadm/mdadm.conf lib/udev/rules.d/64-md-raid-assembly.rules \
    sbin/fsck.xfs bin/busybox; do
    grep -Eqx "(usr/)?$needed" <<<"$initrd_listing" || die "the initramfs lacks $needed"
done

in_chroot dpkg -l >"$tmp/result/packages.txt"
echo "$zfs_version" >"$tmp/result/zfs-module-version"

# Leave no build-time state: apt caches, the dkms build tree, host keys, the
# machine id (empty, not missing: systemd makes a fresh one at first boot),
# the host's resolv.conf, and the daemon block.
in_chroot apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/lib/dkms/zfs/*/build
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
: >"$root/etc/resolv.conf"
rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "${root:?}"/tmp/* "${root:?}"/var/tmp/*

cp "$root/boot/vmlinuz-$kver" "$tmp/result/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$tmp/result/initrd.img"

# The build VM's init; the VM removes this directory from the copy on md0.
mkdir -p "$root/rackseed-build"
install -m 0755 "$here/files/image-builder" "$root/rackseed-build/image-builder"
printf 'MD_UUID=%s\nNODE_HOSTNAME=%s\n' "$md_uuid" "$NODE_HOSTNAME" >"$root/rackseed-build/config"
tree_size=$(du -sxm "$root" | cut -f1)
log "root tree: $tree_size MiB"
phase_done configure

unmount_all
stage_released

# ---------------------------------------------------------------------------
# 4. the RAID build VM: md0 (RAID1) on two qcow2 disks, the root XFS copied
#    onto it (see files/image-builder)

phase raid-build-vm
qemu-img create -q -f qcow2 "$tmp/result/root-a.qcow2" "$ROOT_DISK_SIZE"
qemu-img create -q -f qcow2 "$tmp/result/root-b.qcow2" "$ROOT_DISK_SIZE"
timeout --kill-after=10 "$BUILD_VM_TIMEOUT" qemu-system-x86_64 \
    -accel tcg -machine q35 -cpu max -m 1024 -smp 2 \
    -display none -monitor none -serial "file:$logs/build-vm-console.log" \
    -no-reboot -nic none \
    -kernel "$tmp/result/vmlinuz" -initrd "$tmp/result/initrd.img" \
    -append "root=UUID=$root_uuid rootfstype=xfs ro console=ttyS0,115200 init=/rackseed-build/image-builder panic=-1" \
    -drive "file=$stage_img,format=raw,if=none,id=stage,cache=unsafe,readonly=on" \
    -device virtio-blk-pci,drive=stage,serial=rs-stage \
    -drive "file=$tmp/result/root-a.qcow2,format=qcow2,if=none,id=roota,cache=unsafe" \
    -device virtio-blk-pci,drive=roota,serial=rs-root-a \
    -drive "file=$tmp/result/root-b.qcow2,format=qcow2,if=none,id=rootb,cache=unsafe" \
    -device virtio-blk-pci,drive=rootb,serial=rs-root-b \
    </dev/null &
qemu_pid=$!
vm_rc=0
wait "$qemu_pid" || vm_rc=$?
qemu_pid=
tr -d '\r' <"$logs/build-vm-console.log" | grep -a '^rackseed-image-builder:' >&2 || true
if [ "$vm_rc" -ne 0 ] ||
    ! tr -d '\r' <"$logs/build-vm-console.log" | grep -aqx 'rackseed-image-builder: ok'; then
    tr -d '\r' <"$logs/build-vm-console.log" | tail -n 60 >&2
    die "the RAID build VM failed (qemu exit status $vm_rc)"
fi
rm -f "$stage_img"
phase_done raid-build-vm

# ---------------------------------------------------------------------------
# 5. outputs

result=$tmp/result
echo "root=UUID=$root_uuid rootfstype=xfs ro console=ttyS0,115200 net.ifnames=0" >"$result/kernel-cmdline"
cat >"$result/build-info" <<EOF
suite=$SUITE
arch=$ARCH
mirror=$mirror
kernel_version=$kver
zfs_module_version=$zfs_version
root_fs_uuid=$root_uuid
md_uuid=$md_uuid
root_tree_mib=$tree_size
seconds_debootstrap=${took[debootstrap]}
seconds_packages=${took[packages]}
seconds_zfs_dkms=${took[zfs-dkms]}
seconds_configure=${took[configure]}
seconds_raid_build_vm=${took[raid-build-vm]}
EOF
chmod 0444 "$result/root-a.qcow2" "$result/root-b.qcow2"
date -u '+%Y-%m-%dT%H:%M:%SZ' >"$result/DONE"
mv -T "$result" "$out_dir"
rm -rf "$tmp"
succeeded=1
log "built $out_dir"
echo "$out_dir" >&3
