#!/usr/bin/env bash
# Check the layering of lib/ (README "Layout"): a file includes only its own
# layer and those below (so calls go down, or stay inside a layer), and no
# header includes itself through others.
#
#   0 core      memory, bus, evloop, file, image, image_cache, errbuf, textbuf, byteorder, the state codec
#               (snapshot/state), block backends, the device host interface
#   1 devices   lib/devices/, lib/virtio/
#   2 arch      lib/arch/ (its platform devices are devices)
#   3 VM        vm*.c, vcpu.c, log.c, error.c, abi.c: the life cycle
#   4 above     lib/snapshot/ (writing and restoring), lib/agent/ (beside it)
# Prints each violation; exits 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/../lib"

layer() {
	case $1 in
	memory | bus | evloop | file | image | image_cache | errbuf | textbuf | byteorder | snapshot/state | backend/* | devices/host) echo 0 ;;
	devices/* | virtio/*) echo 1 ;;
	arch/*) echo 2 ;;
	snapshot/* | agent/*) echo 4 ;;
	*) echo 3 ;;
	esac
}

bad=0
edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
while IFS= read -r f; do
	from=${f%.*}
	while IFS= read -r inc; do
		[ -e "$inc" ] || continue # public header (include/) or system
		to=${inc%.*}
		echo "$f $inc" >>"$edges"
		[ "$to" = "$from" ] && continue
		lf=$(layer "$from") lt=$(layer "$to")
		if [ "$lt" -gt "$lf" ]; then
			echo "layering: $f (layer $lf) includes $inc (layer $lt)"
			bad=1
		fi
	done < <(sed -n 's/^#include "\(.*\)"/\1/p' "$f")
done < <(find . -name '*.[ch]' | sed 's|^\./||' | sort)

if ! sort -u "$edges" | tsort >/dev/null 2>"$edges.err"; then
	echo "include cycle:"
	grep -v '^tsort: -: input contains a loop:' "$edges.err" | sed 's/^tsort: /  /'
	bad=1
fi
rm -f "$edges.err"
[ "$bad" -eq 0 ] && echo "layers: no upward include, no include cycle ($(sort -u "$edges" | wc -l) includes)"
exit "$bad"
