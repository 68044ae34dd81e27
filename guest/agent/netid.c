/*
 * Clones on the network (see "Clones on the network" in microvm.h): a VM
 * restored from a snapshot gets a new MAC address on its virtio-net
 * devices and a link flap (carrier off, carrier on). Linux reads a
 * virtio-net device's MAC address only when the driver probes it, so when
 * the carrier of a virtio-net interface comes back up the agent (as init)
 * re-probes the device (unbind and bind virtio_net in sysfs), gives the new
 * interface the old one's name, and puts back its IPv4 address, netmask
 * and routes. The agent only watches the carrier (IFLA_CARRIER, which only
 * the device changes), not the administrative state: `ip link set down`
 * and up in the guest do not re-probe.
 *
 * IPv4 only (the default guest kernel has no IPv6). Interfaces the agent
 * re-probed are ignored until their carrier is first up (a new device
 * starts with it off).
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

#define MAX_IFS 32
#define MAX_ROUTES 16

enum carrier { C_UNKNOWN, C_UP, C_DOWN, C_NEW };

static struct {
	int ifindex;
	enum carrier c;
} ifs[MAX_IFS];

struct ipv4_conf {
	bool up, has_addr;
	struct sockaddr addr, mask;
	unsigned n_routes;
	struct rtentry routes[MAX_ROUTES];
};

static enum carrier *slot(int ifindex)
{
	for (int i = 0; i < MAX_IFS; i++)
		if (ifs[i].ifindex == ifindex)
			return &ifs[i].c;
	for (int i = 0; i < MAX_IFS; i++)
		if (ifs[i].ifindex == 0) {
			ifs[i].ifindex = ifindex;
			ifs[i].c = C_UNKNOWN;
			return &ifs[i].c;
		}
	return NULL;
}

static void forget(int ifindex)
{
	for (int i = 0; i < MAX_IFS; i++)
		if (ifs[i].ifindex == ifindex)
			ifs[i].ifindex = 0;
}

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
	snprintf(r.ifr_name, sizeof(r.ifr_name), "%s", name);
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
	snprintf(r.ifr_name, sizeof(r.ifr_name), "%s", name);
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
			snprintf(now, sizeof(now), "%s", e->d_name);
	closedir(d);
	if (!now[0])
		return -1;
	if (strcmp(now, name) != 0) {
		struct ifreq r = { 0 };
		snprintf(r.ifr_name, sizeof(r.ifr_name), "%s", now);
		snprintf(r.ifr_newname, sizeof(r.ifr_newname), "%s", name);
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
	    write_str("/sys/bus/virtio/drivers/virtio_net/bind", dev) == 0) {
		int idx = claim_new(s, dev, name);
		enum carrier *cs = idx > 0 ? slot(idx) : NULL;
		if (cs)
			*cs = C_NEW;
		restore_conf(s, name, &c);
	}
	close(s);
}

/* One RTM_NEWLINK: the interface whose carrier came back up, or NULL. */
static const char *carrier_back(struct nlmsghdr *h, char *name, size_t len)
{
	struct ifinfomsg *ifi = NLMSG_DATA(h);
	int alen = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof(*ifi));
	int carrier = -1;
	name[0] = 0;
	for (struct rtattr *a = IFLA_RTA(ifi); alen > 0 && RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
		if (a->rta_type == IFLA_CARRIER && RTA_PAYLOAD(a) >= 1)
			carrier = *(unsigned char *)RTA_DATA(a);
		else if (a->rta_type == IFLA_IFNAME)
			snprintf(name, len, "%.*s", (int)RTA_PAYLOAD(a), (char *)RTA_DATA(a));
	}
	enum carrier *c = slot(ifi->ifi_index);
	if (!c || carrier < 0 || !name[0])
		return NULL;
	bool back = carrier == 1 && *c == C_DOWN;
	if (carrier == 1)
		*c = C_UP;
	else if (*c != C_NEW)
		*c = C_DOWN;
	return back ? name : NULL;
}

void netid_event(int fd)
{
	static char buf[16384] __attribute__((aligned(NLMSG_ALIGNTO)));
	for (int rounds = 0; rounds < 64; rounds++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n <= 0)
			return; /* EAGAIN; ENOBUFS (overrun) loses events, not the socket */
		int len = (int)n;
		for (struct nlmsghdr *h = (void *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
			char name[IFNAMSIZ + 1];
			if (h->nlmsg_type == RTM_DELLINK &&
			    h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct ifinfomsg)))
				forget(((struct ifinfomsg *)NLMSG_DATA(h))->ifi_index);
			if (h->nlmsg_type == RTM_NEWLINK &&
			    h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct ifinfomsg)) &&
			    carrier_back(h, name, sizeof(name)))
				reprobe(name);
		}
	}
}
