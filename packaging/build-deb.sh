#!/bin/sh
# Builds the Debian package of rackseed: target/debian/rackseed_<version>_<arch>.deb
# (the last line on stdout is its path).
#
# Contents: /usr/bin/rackseed; the systemd unit rackseed.service; conffiles
# /etc/rackseed/rackseed.toml (the embedded defaults), /etc/rackseed/profiles/*.yaml
# (the example profiles) and /etc/rackseed/images/*.toml (installer image manifests);
# README, ARCHITECTURE and example configs under /usr/share/doc/rackseed. The
# package creates the system user `rackseed`; the unit keeps state in
# /var/lib/rackseed.
#
# Usage: packaging/build-deb.sh                 build the release binary and package it
#        packaging/build-deb.sh --binary PATH   package PATH instead (the tests package
#                                               the debug build they already have)
set -eu
cd "$(dirname "$0")/.."

case "${1:-}" in
    --binary)
        [ -n "${2:-}" ] || { echo "build-deb: --binary needs a path" >&2; exit 2; }
        bin=$2
        ;;
    "")
        cargo build --release -p rackseed >&2
        bin=target/release/rackseed
        ;;
    *)
        echo "usage: packaging/build-deb.sh [--binary PATH]" >&2
        exit 2
        ;;
esac
[ -x "$bin" ] || { echo "build-deb: $bin is not an executable" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
[ -n "$version" ] || { echo "build-deb: no version in Cargo.toml" >&2; exit 1; }

out=target/debian
root=$out/rackseed_${version}_${arch}
rm -rf "$root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/etc/rackseed/profiles" "$root/etc/rackseed/images" \
    "$root/usr/share/doc/rackseed/examples"
install -m 0755 "$bin" "$root/usr/bin/rackseed"
strip --strip-debug "$root/usr/bin/rackseed"
install -m 0644 packaging/rackseed.service "$root/lib/systemd/system/rackseed.service"
install -m 0644 examples/default.toml "$root/etc/rackseed/rackseed.toml"
install -m 0644 profiles/*.yaml "$root/etc/rackseed/profiles/"
install -m 0644 images/*.toml "$root/etc/rackseed/images/"
install -m 0644 README.md docs/ARCHITECTURE.md "$root/usr/share/doc/rackseed/"
install -m 0644 examples/*.toml "$root/usr/share/doc/rackseed/examples/"
cat > "$root/usr/share/doc/rackseed/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: rackseed

Files: *
Copyright: the rackseed developers
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
for s in postinst prerm postrm; do
    install -m 0755 "packaging/$s" "$root/DEBIAN/$s"
done
(cd "$root" && find etc -type f | sed 's|^|/|' | sort) > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: rackseed
Version: $version
Architecture: $arch
Maintainer: rackseed developers <rackseed@example.org>
Section: admin
Priority: optional
Installed-Size: $size
Depends: libc6 (>= 2.34), adduser, ipxe, debian-installer-12-netboot-amd64
Recommends: systemd, ipmitool
Description: bare-metal provisioning appliance (PXE, Debian installer, enrollment)
 rackseed answers DHCP (authoritative or ProxyDHCP), TFTP and HTTP on a
 provisioning network, PXE-boots servers into the Debian installer with a
 preseed generated from a profile (mdraid RAID1 + XFS root, ZFS pools, bonds,
 VLAN bridges) and enrolls installed nodes into redundancy groups that
 replicate ZFS datasets to each other. One binary, one systemd unit.
CONTROL
dpkg-deb --root-owner-group -Zxz --build "$root" "$out/" >&2
echo "$out/rackseed_${version}_${arch}.deb"
