#!/usr/bin/env bash
# Install the build dependencies (Debian 12, as root or with sudo) and build
# libmicrovm into ./build. Safe to run again: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config libfdt-dev liburing-dev libseccomp-dev libcap-ng-dev libcmocka-dev valgrind binutils passt
      python3 python3-pytest python3-pip python3-venv python3-setuptools python3-wheel
      mmdebstrap umoci e2fsprogs busybox-static cpio clang)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	echo "setup: installing ${missing[*]}"
	$SUDO apt-get update -q
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
