#!/usr/bin/env bash
# List the C functions in lib/ and guest/agent/ whose bodies are longer than
# LIMIT lines (default 80), longest first; exit 1 if there is any.
#
# A function body is taken to run from a line that starts with "{" in column 0
# to the next line that starts with "}" in column 0 (the kernel style this
# project uses); its length counts both brace lines. The function's name is
# the first identifier followed by "(" on the lines just before the "{" (after
# the last comment, blank line, declaration or preprocessor line).
# Struct and array initialisers open their brace on the declaration's line, so
# they are not counted.
set -euo pipefail
cd "$(dirname "$0")/.."

LIMIT=${1:-80}
case "$LIMIT" in
'' | *[!0-9]*)
	echo "usage: $0 [LIMIT]" >&2
	exit 2
	;;
esac

mapfile -t files < <(find lib guest/agent -name '*.c' | sort)

out=$(awk -v limit="$LIMIT" '
	FNR == 1 { inbody = 0; sig = "" }
	# Remember the text since the last declaration or body: it holds the
	# signature of the function whose body may open next.
	!inbody && /^\{/ {
		name = "?"
		s = sig
		while (match(s, /[A-Za-z_][A-Za-z0-9_]*[ \t]*\(/)) {
			name = substr(s, RSTART, RLENGTH)
			s = substr(s, RSTART + RLENGTH)
			sub(/[ \t]*\($/, "", name)
			if (name !~ /^__attribute__$/)
				break
			name = "?"
		}
		inbody = 1
		start = FNR
		next
	}
	inbody && /^\}/ {
		len = FNR - start + 1
		if (len > limit)
			printf "%d\t%s:%d\t%s\n", len, FILENAME, start, name
		inbody = 0
		sig = ""
		next
	}
	!inbody {
		if ($0 ~ /;[ \t]*$/ || $0 ~ /^#/ || $0 ~ /^\}/ || $0 ~ /^[ \t]*$/ ||
		    $0 ~ /^[ \t]*\/?\*/ || $0 ~ /\*\/[ \t]*$/ || $0 ~ /^[ \t]*\/\//)
			sig = ""
		else
			sig = sig " " $0
	}
' "${files[@]}" | sort -rn)

if [ -z "$out" ]; then
	echo "no function in lib/ or guest/agent/ is longer than $LIMIT lines"
	exit 0
fi
echo "functions longer than $LIMIT lines (lines, file:line of the opening brace, name):"
printf '%s\n' "$out"
exit 1
