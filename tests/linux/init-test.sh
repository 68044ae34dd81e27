#!/bin/sh
# /init of the Linux-guest test initramfs: prove the boot worked, talk over
# the console in both directions, then end the way the command line asks.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "MICROVM-TEST-INIT"
echo "CPUS: $(grep -c '^processor' /proc/cpuinfo)"
echo "UPTIME: $(cut -d' ' -f1 /proc/uptime)"
case "$MICROVM_TEST" in
panic)
	echo "init exiting on purpose"
	exit 1 ;;
rng)
	echo "RNG: $(od -An -N16 -tx1 /dev/hwrng | tr -d ' \n')"
	reboot -f ;;
timers)
	# Which timers the kernel found; then a sleep, which needs them to tick.
	echo "DEADLINE-CPUS: $(grep -c tsc_deadline_timer /proc/cpuinfo)"
	echo "CLOCKSOURCE: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
	sleep 1 && echo "SLEPT"
	reboot -f ;;
ro-disk)
	# The disk is attached read-only: writing it must fail in the guest.
	if dd if=/dev/zero of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null; then
		echo "RO-DISK: write succeeded"
	else
		echo "RO-DISK: write refused"
	fi
	echo "RO-DISK: first bytes $(od -An -N8 -c /dev/vda | tr -d ' ')"
	reboot -f ;;
snapshot)
	# State that lives only in guest RAM: a counter file in tmpfs, bumped
	# by a background process; then commands from the console. Each value
	# is written aside and renamed into place: a snapshot taken between
	# the truncation and the write of "echo >" would give its clones an
	# empty counter to read first.
	/bin/busybox mount -t tmpfs tmpfs /tmp
	echo 0 >/tmp/counter
	( n=0; while :; do n=$((n + 1)); echo $n >/tmp/counter.new
	  mv /tmp/counter.new /tmp/counter; sleep 0.1; done ) &
	id=original
	echo "READY-FOR-INPUT"
	while read -r cmd arg; do
		case "$cmd" in
		show) echo "STATE: id=$id counter=$(cat /tmp/counter)" ;;
		id) id=$arg; echo "ID-SET: $id" ;;
		disk)
			echo "$arg" | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null
			echo "DISK-WROTE: $arg" ;;
		esac
	done ;;
esac
echo "READY-FOR-INPUT"
read -r line
echo "ECHO: $line"
case "$MICROVM_TEST" in
poweroff) poweroff -f ;;
*) reboot -f ;;
esac
sleep 1000
