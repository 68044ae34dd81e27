#!/usr/bin/env bash
# The libraries define no global symbol but the public API: libmicrovm.a
# (its internal symbols localized at build time) and libmicrovm.so (the
# version script) must both have exactly the microvm_* functions of the
# symbol map, plus, in the .so, the MICROVM_* version nodes.
# Usage: check-symbols.sh LIBMICROVM.a LIBMICROVM.so
set -euo pipefail
archive=$1
shared=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# "nm -g --defined-only": defined global (and weak) symbols, any type.
nm -g --defined-only "$archive" | awk 'NF == 3 {print $3}' | sort >"$tmp/a"
nm -g --defined-only "$shared" | awk 'NF == 3 {print $3}' | sort >"$tmp/so"
# (newer nm prints dynamic symbols as name@@VERSION: the name alone counts)
nm -D --defined-only "$shared" | awk 'NF == 3 {sub(/@.*/, "", $3); print $3}' | sort >"$tmp/dyn"
public='^microvm_[a-z0-9][a-z0-9_]*$' # microvm__* names are internal
node='^MICROVM_(AGENT_)?[0-9]+\.[0-9]+$'

status=0
report() { # FILE WHAT PATTERN...
	local file=$1 what=$2 bad
	shift 2
	bad=$(grep -Ev "$(IFS='|'; echo "$*")" "$file" || true)
	if [ -n "$bad" ]; then
		echo "$what defines non-public global symbols:"
		echo "$bad" | sed 's/^/  /'
		status=1
	fi
}
report "$tmp/a" "$archive" "$public"
report "$tmp/so" "$shared (symtab)" "$public" "$node"
report "$tmp/dyn" "$shared (dynsym)" "$public" "$node"

grep -E "$public" "$tmp/dyn" >"$tmp/api" || true
if ! cmp -s "$tmp/a" "$tmp/api"; then
	echo "the archive's and the shared library's public symbols differ:"
	diff "$tmp/a" "$tmp/api" | sed 's/^/  /' || true
	status=1
fi
[ -s "$tmp/api" ] || { echo "no public symbols found"; status=1; }
echo "$(wc -l <"$tmp/a") global symbols in $(basename "$archive"), $(wc -l <"$tmp/dyn") in" \
	"$(basename "$shared")'s dynamic table ($(grep -cE "$node" "$tmp/dyn") version nodes)"
[ "$status" = 0 ] && echo "symbol check: OK"
exit "$status"
