/*
 * NETID (protocol 1.2): the host gives the MAC addresses of the VM's
 * virtio-net devices, in device order. A clone restored or forked from a
 * snapshot has new ones (see "Clones on the network" in microvm.h), but
 * Linux reads a virtio-net device's address only when it probes it; the
 * agent sets each interface whose address differs (SIOCSIFHWADDR: virtio-
 * net changes it live; Linux flushes the interface's ARP entries, and sends
 * a gratuitous ARP only with arp_notify set), so the guest uses the new
 * addresses from the host's first command on. Open connections, addresses
 * and routes are untouched.
 *
 * Device order: the virtio devices virtio_net drives, by their number
 * (virtioN, numbered as the guest found them: the VM's device order).
 */
#include "netid.h"

#include <dirent.h>
#include <errno.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_DEVS 64

static int fail(char *why, size_t len, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *why, size_t len, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return -err;
}

static int cmp_uint(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	return x < y ? -1 : x > y;
}

/* The numbers N of the virtioN devices virtio_net drives, ascending. */
static int net_devices(unsigned *nums, int max)
{
	DIR *d = opendir("/sys/bus/virtio/drivers/virtio_net");
	if (!d)
		return 0;
	int n = 0;
	struct dirent *e;
	unsigned v;
	char tail;
	while ((e = readdir(d)) && n < max)
		if (sscanf(e->d_name, "virtio%u%c", &v, &tail) == 1)
			nums[n++] = v;
	closedir(d);
	qsort(nums, (size_t)n, sizeof(*nums), cmp_uint);
	return n;
}

/* The interface of device virtio@num in @name. */
static bool iface_of(unsigned num, char name[IFNAMSIZ])
{
	char path[64];
	snprintf(path, sizeof(path), "/sys/bus/virtio/devices/virtio%u/net", num);
	DIR *d = opendir(path);
	if (!d)
		return false;
	struct dirent *e;
	name[0] = 0;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			snprintf(name, IFNAMSIZ, "%.*s", IFNAMSIZ - 1, e->d_name);
	closedir(d);
	return name[0] != 0;
}

/* Give interface @name address @mac. 1 changed, 0 already had it, -errno. */
static int set_mac(int s, const char *name, const uint8_t *mac, char *why, size_t len)
{
	struct ifreq r;
	memset(&r, 0, sizeof(r));
	snprintf(r.ifr_name, sizeof(r.ifr_name), "%s", name);
	if (ioctl(s, SIOCGIFHWADDR, &r) < 0)
		return fail(why, len, errno, "%s: SIOCGIFHWADDR: %s", name, strerror(errno));
	if (memcmp(r.ifr_hwaddr.sa_data, mac, 6) == 0)
		return 0;
	r.ifr_hwaddr.sa_family = ARPHRD_ETHER;
	memcpy(r.ifr_hwaddr.sa_data, mac, 6);
	if (ioctl(s, SIOCSIFHWADDR, &r) < 0)
		return fail(why, len, errno, "%s: SIOCSIFHWADDR: %s", name, strerror(errno));
	return 1;
}

int netid_apply(const uint8_t *macs, uint32_t n, char *why, size_t len)
{
	unsigned nums[MAX_DEVS];
	int found = net_devices(nums, MAX_DEVS);
	if ((uint32_t)found < n)
		return fail(why, len, ENODEV, "the host has %u network interfaces, the guest's "
			    "virtio_net drives %d", n, found);
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return fail(why, len, errno, "socket: %s", strerror(errno));
	int changed = 0;
	for (uint32_t i = 0; i < n; i++) {
		char name[IFNAMSIZ];
		if (!iface_of(nums[i], name)) {
			changed = fail(why, len, ENODEV, "virtio%u has no interface", nums[i]);
			break;
		}
		int r = set_mac(s, name, macs + 6 * i, why, len);
		if (r < 0) {
			changed = r;
			break;
		}
		changed += r;
	}
	close(s);
	return changed;
}
