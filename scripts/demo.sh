#!/usr/bin/env bash
# The main job: set everything up, then boot a microVM and show its console.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
echo "demo: booting the tiny hello guest in a microVM (build/guest/tiny/hello.elf)"
exec ./build/examples/microvm-hello --kernel build/guest/tiny/hello.elf --verbose
