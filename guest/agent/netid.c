/*
 * Clones on the network (see "Clones on the network" in microvm.h): a VM
 * restored from a snapshot gets a new MAC address on its virtio-net
 * devices and a link flap (carrier off, carrier on). Linux reads a
 * virtio-net device's MAC address only when the driver probes it, so when
 * the carrier of a virtio-net interface went down and is up again the
 * agent (as init) re-probes the device (unbind and bind virtio_net in
 * sysfs), gives the new interface the old one's name, and puts back its
 * IPv4 address, netmask and routes. It checks on link events (rtnetlink)
 * and before serving each connection. Only the carrier counts (which only
 * the device changes), not the administrative state: `ip link set down`
 * and up in the guest do not re-probe.
 *
 * IPv4 only (the default guest kernel has no IPv6).
 */
#include "netid.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <net/if.h>
#include <net/route.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <linux/rtnetlink.h>

/* Linux's sysfs gives each interface's carrier_down_count: a flap shows as
 * a higher count with the carrier up, even if link events were merged. */

#define MAX_IFS 32
#define MAX_ROUTES 16

/* The carrier_down_count each virtio-net interface had when last seen. */
static struct {
	int ifindex;
	unsigned long downs;
} seen[MAX_IFS];

struct ipv4_conf {
	bool up, has_addr;
	struct sockaddr addr, mask;
	unsigned n_routes;
	struct rtentry routes[MAX_ROUTES];
};

int netid_open(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
	if (fd < 0)
		return -1;
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK };
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	netid_check();
	return fd;
}

/* The device (virtioN) behind interface @name if virtio_net drives it. */
static bool virtio_dev_of(const char *name, char *dev, size_t len)
{
	char path[128], link[PATH_MAX];
	snprintf(path, sizeof(path), "/sys/class/net/%s/device/driver", name);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return false;
	link[n] = 0;
	if (strcmp(basename(link), "virtio_net") != 0)
		return false;
	snprintf(path, sizeof(path), "/sys/class/net/%s/device", name);
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return false;
	link[n] = 0;
	snprintf(dev, len, "%s", basename(link));
	return true;
}

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t w = write(fd, s, strlen(s));
	close(fd);
	return w == (ssize_t)strlen(s) ? 0 : -1;
}

/* /sys/class/net/@name/@attr as a number; false if unreadable (e.g. the
 * carrier of an interface that is down). */
static bool read_num(const char *name, const char *attr, unsigned long *v)
{
	char path[128], buf[32];
	snprintf(path, sizeof(path), "/sys/class/net/%s/%s", name, attr);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	return sscanf(buf, "%lu", v) == 1;
}
/* The routes through @name, from /proc/net/route. */
static void save_routes(const char *name, struct ipv4_conf *c)
{
	FILE *f = fopen("/proc/net/route", "re");
	if (!f)
		return;
	char line[256], ifn[IFNAMSIZ + 1];
	unsigned dst, gw, flags, refcnt, use, metric, mask;
	while (fgets(line, sizeof(line), f) && c->n_routes < MAX_ROUTES) {
		if (sscanf(line, "%16s %x %x %x %u %u %u %x", ifn, &dst, &gw, &flags, &refcnt, &use,
			   &metric, &mask) != 8 || strcmp(ifn, name) != 0)
			continue;
		struct rtentry *rt = &c->routes[c->n_routes++];
		memset(rt, 0, sizeof(*rt));
		struct sockaddr_in *d = (void *)&rt->rt_dst, *g = (void *)&rt->rt_gateway,
				   *m = (void *)&rt->rt_genmask;
		d->sin_family = g->sin_family = m->sin_family = AF_INET;
		d->sin_addr.s_addr = dst;
		g->sin_addr.s_addr = gw;
		m->sin_addr.s_addr = mask;
		rt->rt_flags = (unsigned short)flags;
		rt->rt_metric = (short)(metric + 1); /* the ioctl's convention */
	}
	fclose(f);
}

static void save_conf(int s, const char *name, struct ipv4_conf *c)
{
	struct ifreq r = { 0 };
	snprintf(r.ifr_name, sizeof(r.ifr_name), "%.*s", IFNAMSIZ - 1, name);
	c->up = ioctl(s, SIOCGIFFLAGS, &r) == 0 && (r.ifr_flags & IFF_UP);
	c->has_addr = ioctl(s, SIOCGIFADDR, &r) == 0;
	c->addr = r.ifr_addr;
	if (c->has_addr && ioctl(s, SIOCGIFNETMASK, &r) == 0)
		c->mask = r.ifr_netmask;
	else
		c->has_addr = false;
	save_routes(name, c);
}

static void restore_conf(int s, const char *name, struct ipv4_conf *c)
{
	struct ifreq r = { 0 };
	snprintf(r.ifr_name, sizeof(r.ifr_name), "%.*s", IFNAMSIZ - 1, name);
	if (c->has_addr) {
		r.ifr_addr = c->addr;
		(void)ioctl(s, SIOCSIFADDR, &r);
		r.ifr_netmask = c->mask;
		(void)ioctl(s, SIOCSIFNETMASK, &r);
	}
	if (!c->up)
		return;
	if (ioctl(s, SIOCGIFFLAGS, &r) == 0) {
		r.ifr_flags |= IFF_UP;
		(void)ioctl(s, SIOCSIFFLAGS, &r);
	}
	for (unsigned i = 0; i < c->n_routes; i++) {
		c->routes[i].rt_dev = (char *)name;
		(void)ioctl(s, SIOCADDRT, &c->routes[i]); /* EEXIST: the subnet's own */
	}
}

/* The interface virtio_net made for @dev, renamed to @name. Its ifindex. */
static int claim_new(int s, const char *dev, const char *name)
{
	char path[128];
	snprintf(path, sizeof(path), "/sys/bus/virtio/devices/%s/net", dev);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	struct dirent *e;
	char now[IFNAMSIZ] = "";
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			snprintf(now, sizeof(now), "%.*s", IFNAMSIZ - 1, e->d_name);
	closedir(d);
	if (!now[0])
		return -1;
	if (strcmp(now, name) != 0) {
		struct ifreq r = { 0 };
		snprintf(r.ifr_name, sizeof(r.ifr_name), "%.*s", IFNAMSIZ - 1, now);
		snprintf(r.ifr_newname, sizeof(r.ifr_newname), "%.*s", IFNAMSIZ - 1, name);
		(void)ioctl(s, SIOCSIFNAME, &r);
	}
	return (int)if_nametoindex(name);
}

/* Re-probe interface @name's device so that it takes the device's MAC
 * address, keeping its name and IPv4 configuration. */
static void reprobe(const char *name)
{
	char dev[64];
	if (!virtio_dev_of(name, dev, sizeof(dev)))
		return;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	static struct ipv4_conf c;
	memset(&c, 0, sizeof(c));
	save_conf(s, name, &c);
	if (write_str("/sys/bus/virtio/drivers/virtio_net/unbind", dev) == 0 &&
	    write_str("/sys/bus/virtio/drivers/virtio_net/bind", dev) == 0 &&
	    claim_new(s, dev, name) > 0)
		restore_conf(s, name, &c);
	close(s);
}

/* The record of @ifindex (a new one if unseen: *fresh). NULL if full. */
static unsigned long *record(int ifindex, bool *fresh)
{
	*fresh = false;
	for (int i = 0; i < MAX_IFS; i++)
		if (seen[i].ifindex == ifindex)
			return &seen[i].downs;
	for (int i = 0; i < MAX_IFS; i++)
		if (seen[i].ifindex == 0) {
			seen[i].ifindex = ifindex;
			*fresh = true;
			return &seen[i].downs;
		}
	return NULL;
}

/* Interface @name: true if its carrier went down since last seen and is
 * up now (a restored clone's link flap). Records what it saw. */
static bool flapped(const char *name)
{
	unsigned long idx, downs, carrier;
	bool fresh;
	if (!read_num(name, "ifindex", &idx) || !read_num(name, "carrier_down_count", &downs))
		return false;
	unsigned long *r = record((int)idx, &fresh);
	if (!r)
		return false;
	if (fresh || downs <= *r) {
		*r = downs;
		return false;
	}
	if (!read_num(name, "carrier", &carrier) || carrier != 1)
		return false; /* still down: act when it is back */
	*r = downs;
	return true;
}

/* Forget interfaces that are gone (their ifindex is not reused soon, but
 * the table is small). */
static void prune(void)
{
	char name[IF_NAMESIZE];
	for (int i = 0; i < MAX_IFS; i++)
		if (seen[i].ifindex && !if_indextoname((unsigned)seen[i].ifindex, name))
			seen[i].ifindex = 0;
}

void netid_check(void)
{
	DIR *d = opendir("/sys/class/net");
	if (!d)
		return;
	char flappers[MAX_IFS][IF_NAMESIZE];
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < MAX_IFS) {
		char dev[64];
		if (e->d_name[0] != '.' && strlen(e->d_name) < IF_NAMESIZE &&
		    virtio_dev_of(e->d_name, dev, sizeof(dev)) && flapped(e->d_name))
			snprintf(flappers[n++], IF_NAMESIZE, "%s", e->d_name);
	}
	closedir(d);
	for (int i = 0; i < n; i++)
		reprobe(flappers[i]);
	if (n) {
		prune();
		netid_check(); /* record the new interfaces (fresh: no action) */
	}
}

void netid_event(int fd)
{
	static char buf[16384];
	bool links = false;
	for (int rounds = 0; rounds < 64; rounds++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && errno == ENOBUFS) {
			links = true; /* overrun: events lost, the check below sees all */
			continue;
		}
		if (n <= 0)
			break;
		links = true;
	}
	if (links)
		netid_check();
}
