/* Clones on the network: re-probe virtio-net devices whose carrier came
 * back up (a restored clone's new MAC address). See netid.c. */
#ifndef MICROVM_AGENT_NETID_H
#define MICROVM_AGENT_NETID_H

/* A netlink socket for link events (non-blocking), or -1. */
int netid_open(void);
/* Handle the link events waiting on @fd. */
void netid_event(int fd);

#endif
