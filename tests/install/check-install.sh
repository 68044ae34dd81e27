#!/usr/bin/env bash
# Install the build tree into a temporary prefix, then build the 10-line
# hello10.c against it twice (pkg-config and CMake find_package) and run the
# tiny hello guest with each.  Usage: check-install.sh BUILD_DIR PAYLOAD
set -euo pipefail
build=$1
payload=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
libdir=$(find "$tmp/prefix" -name microvm.pc -printf '%h\n' | head -n1)/..
libdir=$(cd "$libdir" && pwd)
for f in include/microvm.h include/microvm_agent.h; do test -f "$tmp/prefix/$f"; done
test -L "$libdir/libmicrovm.so"
test -f "$libdir/libmicrovm.a"
soname=$(objdump -p "$libdir/libmicrovm.so" | awk '/SONAME/ {print $2}')
[ "$soname" = "libmicrovm.so.0" ] || { echo "bad SONAME: $soname"; exit 1; }
# Only microvm_* symbols are exported, all with a version node.
bad=$(nm -D --defined-only "$libdir/libmicrovm.so" | awk '{print $3}' | grep -v '^microvm_' | grep -v '^MICROVM_' || true)
[ -z "$bad" ] || { echo "unexpected exported symbols: $bad"; exit 1; }

export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror -o "$tmp/hello10" "$here/hello10.c" $(pkg-config --cflags --libs microvm) \
	-Wl,-rpath,"$libdir"
out=$("$tmp/hello10" "$payload")
echo "pkg-config build says: $out"
[ "$out" = "Hello from the microvm tiny guest!" ] || { echo "unexpected output"; exit 1; }

cmake -S "$here/cmake-consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
	-DCMAKE_BUILD_RPATH="$libdir" >/dev/null
cmake --build "$tmp/consumer" >/dev/null
out=$("$tmp/consumer/consumer" "$payload")
echo "find_package build says: $out"
[ "$out" = "Hello from the microvm tiny guest!" ] || { echo "unexpected output"; exit 1; }
echo "install check: OK"
