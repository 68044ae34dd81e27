/* NETID: the MAC addresses the host gives the guest's virtio-net
 * interfaces (a restored clone's new ones). See netid.c. */
#ifndef MICROVM_AGENT_NETID_H
#define MICROVM_AGENT_NETID_H

#include <stddef.h>
#include <stdint.h>

/* Give the guest's virtio-net interfaces, in device order, the @n MAC
 * addresses in @macs (6 bytes each) where they differ. Returns how many
 * changed, or -errno with a message in @why (fewer interfaces than @n, an
 * ioctl refused). */
int netid_apply(const uint8_t *macs, uint32_t n, char *why, size_t len);

#endif
