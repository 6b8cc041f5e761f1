#!/bin/bash
# Smoke test of the rackseed node image: boots it in QEMU (TCG) three times
# and checks it over the serial console (see smoke.exp for every check).
#
#   boot 1 (full)      fresh overlays: md0 RAID1 [UU] root, XFS, a ZFS mirror
#                      on two data disks, bonding + VLAN + bridge, eth0/eth1,
#                      DHCP, machine id, SSH host keys, the shim idle
#   boot 2 (shim-ok)   fresh overlays, cmdline rackseed.preseed=<URL>: the shim
#                      runs the late_command and reboots; checked after the
#                      reboot; its machine id must differ from boot 1's
#   boot 3 (shim-fail) boot 2's disks, a preseed whose late_command fails: the
#                      console says so and the VM stays up
#
# Usage: tests/node-image/smoke.sh [IMAGE_DIR]
#   IMAGE_DIR defaults to the directory that build.sh prints (building the
#   image first if it is not cached).
#
# The VMs use `-netdev user,restrict=on`: no route to the host or beyond; the
# preseeds are served to the guest at 10.0.2.100:80 with QEMU's guestfwd.
set -euo pipefail
export LC_ALL=C

# Debian packages the host needs for this script (besides build.sh's).
SMOKE_HOST_PACKAGES="qemu-system-x86 qemu-utils expect"

here=$(cd "$(dirname "$0")" && pwd)

log() {
    printf 'smoke: %s\n' "$*" >&2
}

die() {
    log "FAIL: $*"
    exit 1
}

missing=()
for pkg in $SMOKE_HOST_PACKAGES; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != installed ]; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing host packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

if [ "$#" -ge 1 ]; then
    image=$1
else
    image=$("$here/build.sh" | tail -n 1)
fi
[ -f "$image/DONE" ] || die "$image is not a complete node image (no DONE)"

work=$(mktemp -d /var/tmp/rackseed-node-smoke.XXXXXX)
driver_pid=
cleanup() {
    local rc=$?
    set +e
    if [ -n "$driver_pid" ] && kill -0 "$driver_pid" 2>/dev/null; then
        kill "$driver_pid"
        wait "$driver_pid"
    fi
    if [ "$rc" -ne 0 ]; then
        for f in "$work"/console-*.log; do
            [ -f "$f" ] || continue
            log "last console lines of ${f##*/}:"
            tail -n 40 "$f" | tr -d '\r' >&2
        done
    fi
    if [ "${RACKSEED_KEEP_SMOKE:-0}" = 1 ]; then
        log "kept $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Serves one HTTP response with the file $1 on stdin/stdout; QEMU's guestfwd
# starts it once per connection.
cat >"$work/serve-file" <<'EOF'
#!/bin/sh
cr=$(printf '\r')
while IFS= read -r line; do
    line=${line%"$cr"}
    [ -n "$line" ] || break
done
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' \
    "$(wc -c <"$1")"
cat "$1"
EOF
chmod 0755 "$work/serve-file"

# A late_command in the shape rackseed renders: continued lines, comments and
# other questions around it.
cat >"$work/preseed-ok.cfg" <<'EOF'
# rackseed smoke test preseed (late_command succeeds)
d-i debian-installer/locale string en_US.UTF-8
#d-i preseed/late_command string echo commented-out >> /target/root/shim-ran
d-i preseed/late_command string \
    echo "RACKSEED_SHIM=$RACKSEED_SHIM" >> /target/root/shim-ran; \
    if mountpoint -q /target; then echo target-mounted >> /target/root/shim-ran; fi; \
    in-target sh -c 'test -r /proc/self/status && echo in-target-ok >> /root/shim-ran'; \
    echo "cwd=$(pwd)" >> /target/root/shim-ran
d-i finish-install/reboot_in_progress note
EOF
cat >"$work/preseed-fail.cfg" <<'EOF'
# rackseed smoke test preseed (late_command fails)
d-i preseed/late_command string cat /proc/sys/kernel/random/boot_id > /target/root/fail-boot-id; \
    exit 3
EOF

cmdline=$(cat "$image/kernel-cmdline")

# Writes $work/<name>/vm: a script that starts the VM of a smoke boot.
#   $1 name, $2 disk directory (overlays made if missing), $3 extra cmdline,
#   $4 preseed file served at http://10.0.2.100/preseed.cfg (or empty)
make_vm() {
    local name=$1 disks=$2 extra=$3 preseed=$4 fwd="" i
    mkdir -p "$work/$name" "$disks"
    if [ ! -f "$disks/root-a.qcow2" ]; then
        qemu-img create -q -f qcow2 -F qcow2 -b "$image/root-a.qcow2" "$disks/root-a.qcow2"
        qemu-img create -q -f qcow2 -F qcow2 -b "$image/root-b.qcow2" "$disks/root-b.qcow2"
    fi
    for i in 1 2 3 4; do
        rm -f "$disks/data-$i.qcow2"
        qemu-img create -q -f qcow2 "$disks/data-$i.qcow2" 1G
    done
    if [ -n "$preseed" ]; then
        fwd=",guestfwd=tcp:10.0.2.100:80-cmd:$work/serve-file $preseed"
    fi
    cat >"$work/$name/vm" <<EOF
#!/bin/sh
exec qemu-system-x86_64 -accel tcg -machine q35 -cpu max -m 2048 -smp 2 -nographic \\
    -kernel '$image/vmlinuz' -initrd '$image/initrd.img' \\
    -append '$cmdline $extra' \\
    -drive file='$disks/root-a.qcow2',format=qcow2,if=virtio,cache=unsafe \\
    -drive file='$disks/root-b.qcow2',format=qcow2,if=virtio,cache=unsafe \\
    -drive file='$disks/data-1.qcow2',format=qcow2,if=virtio,cache=unsafe \\
    -drive file='$disks/data-2.qcow2',format=qcow2,if=virtio,cache=unsafe \\
    -drive file='$disks/data-3.qcow2',format=qcow2,if=virtio,cache=unsafe \\
    -drive file='$disks/data-4.qcow2',format=qcow2,if=virtio,cache=unsafe \\
    -netdev 'user,id=n0,restrict=on$fwd' -device virtio-net-pci,netdev=n0 \\
    -netdev user,id=n1,restrict=on -device virtio-net-pci,netdev=n1
EOF
    chmod 0755 "$work/$name/vm"
}

# Runs one smoke boot; $1 name, $2 mode. Bounded by a hard timeout on top of
# smoke.exp's own per-step timeouts.
run_boot() {
    local name=$1 mode=$2 t0
    t0=$(date +%s)
    log "boot $name ($mode)"
    timeout --kill-after=10 1800 expect -f "$here/smoke.exp" "$mode" "$work/$name/vm" \
        "$work/$name/results" "$work/console-$name.log" >&2 &
    driver_pid=$!
    wait "$driver_pid" || die "boot $name ($mode) failed; console log below"
    driver_pid=
    log "boot $name took $(($(date +%s) - t0)) s"
}

result_of() {
    sed -n "s/^$2 //p" "$work/$1/results"
}

make_vm first "$work/disks-1" "" ""
run_boot first full

make_vm second "$work/disks-2" "rackseed.preseed=http://10.0.2.100/preseed.cfg" "$work/preseed-ok.cfg"
run_boot second shim-ok

id1=$(result_of first machine-id)
id2=$(result_of second machine-id)
if [ -z "$id1" ] || [ -z "$id2" ]; then
    die "a boot recorded no machine id"
fi
[ "$id1" != "$id2" ] || die "two fresh overlays booted with the same machine id $id1"
log "ok: machine ids differ ($id1, $id2)"

make_vm third "$work/disks-2" "rackseed.preseed=http://10.0.2.100/preseed.cfg" "$work/preseed-fail.cfg"
run_boot third shim-fail

log "passed: $image"
