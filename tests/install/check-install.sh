#!/usr/bin/env bash
# Install the build tree into a temporary prefix, then build the 10-line
# hello10.c against it (pkg-config and CMake find_package, shared and static)
# and run the tiny hello guest with each.  Usage: check-install.sh BUILD_DIR PAYLOAD
set -euo pipefail
build=$1
payload=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
libdir=$(find "$tmp/prefix" -name microvm.pc -printf '%h\n' | head -n1)/..
libdir=$(cd "$libdir" && pwd)
for f in include/microvm.h include/microvm_agent.h include/microvm_version.h; do
	test -f "$tmp/prefix/$f"
done
test -L "$libdir/libmicrovm.so"
test -f "$libdir/libmicrovm.a"
soname=$(objdump -p "$libdir/libmicrovm.so" | awk '/SONAME/ {print $2}')
[ "$soname" = "libmicrovm.so.0" ] || { echo "bad SONAME: $soname"; exit 1; }
# Only microvm_* symbols are exported, all with a version node.
bad=$(nm -D --defined-only "$libdir/libmicrovm.so" | awk '{print $3}' | grep -v '^microvm_' | grep -v '^MICROVM_' || true)
[ -z "$bad" ] || { echo "unexpected exported symbols: $bad"; exit 1; }

export PKG_CONFIG_PATH="$libdir/pkgconfig"

# One version everywhere: the installed header (compiled with the installed
# files only), microvm_version() of the installed library, pkg-config, the
# symbol map's newest node and the README's "API vMAJOR.MINOR".
cat >"$tmp/version.c" <<'EOF'
#include <microvm.h>
#include <stdio.h>
int main(void)
{
	printf("%s %s %d.%d\n", MICROVM_VERSION_STRING, microvm_version(), MICROVM_VERSION_MAJOR,
	       MICROVM_VERSION_MINOR);
	return 0;
}
EOF
# shellcheck disable=SC2046
cc -Wall -Werror -o "$tmp/version" "$tmp/version.c" $(pkg-config --cflags --libs microvm) \
	-Wl,-rpath,"$libdir"
read -r hdr lib majmin < <("$tmp/version")
pc=$(pkg-config --modversion microvm)
echo "versions: header $hdr, library $lib, pkg-config $pc"
[ "$hdr" = "$lib" ] && [ "$hdr" = "$pc" ] || { echo "version mismatch"; exit 1; }
# (the whole output first: grep -q stopping early would fail the pipe)
objdump -p "$libdir/libmicrovm.so" | grep "MICROVM_$majmin\$" >/dev/null ||
	{ echo "no MICROVM_$majmin node in the symbol map"; exit 1; }
grep -q "API v$majmin\." "$here/../../README.md" || { echo "README: not API v$majmin"; exit 1; }
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror -o "$tmp/hello10" "$here/hello10.c" $(pkg-config --cflags --libs microvm) \
	-Wl,-rpath,"$libdir"
out=$("$tmp/hello10" "$payload")
echo "pkg-config build says: $out"
[ "$out" = "Hello from the microvm tiny guest!" ] || { echo "unexpected output"; exit 1; }

# The static library: only microvm_* global, and a program that defines
# names the library uses internally (collide.c) links and runs with it.
"$here/check-symbols.sh" "$libdir/libmicrovm.a" "$libdir/libmicrovm.so"
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror -o "$tmp/hello10-static" "$here/hello10.c" "$here/collide.c" \
	$(pkg-config --cflags microvm) "$libdir/libmicrovm.a" \
	$(pkg-config --static --libs microvm | sed 's/-lmicrovm\b//')
out=$("$tmp/hello10-static" "$payload")
echo "static pkg-config build says: $out"
[ "$out" = "Hello from the microvm tiny guest!" ] || { echo "unexpected output"; exit 1; }
! ldd "$tmp/hello10-static" | grep -q libmicrovm || { echo "static build uses libmicrovm.so"; exit 1; }

cmake -S "$here/cmake-consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
	-DCMAKE_BUILD_RPATH="$libdir" -DMICROVM_EXPECTED_VERSION="$hdr" >/dev/null
cmake --build "$tmp/consumer" >/dev/null
out=$("$tmp/consumer/consumer" "$payload")
echo "find_package build says: $out"
[ "$out" = "Hello from the microvm tiny guest!" ] || { echo "unexpected output"; exit 1; }
out=$("$tmp/consumer/consumer_static" "$payload")
echo "find_package static build says: $out"
[ "$out" = "Hello from the microvm tiny guest!" ] || { echo "unexpected output"; exit 1; }
echo "install check: OK"
