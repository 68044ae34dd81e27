#!/usr/bin/env bash
# Fetch Debian's cloud kernel (a kernel this project did not configure) and
# print the path of its bzImage. Cached in DIR.
#   tests/linux/distro-kernel.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
if ! ls vmlinuz-* >/dev/null 2>&1; then
	pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	if [ -z "$pkg" ]; then
		apt-get update -q >&2
		pkg=$(apt-cache depends linux-image-cloud-amd64 |
			awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	fi
	[ -n "$pkg" ] || { echo "distro-kernel: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
	rm -rf pkg ./*.deb
	apt-get download "$pkg" >&2
	dpkg-deb -x ./*.deb pkg
	cp pkg/boot/vmlinuz-* .
	rm -rf pkg ./*.deb
fi
ls "$dir"/vmlinuz-* | head -n1
