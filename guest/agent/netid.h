/* Clones on the network: re-probe virtio-net devices whose carrier came
 * back up (a restored clone's new MAC address). See netid.c. */
#ifndef MICROVM_AGENT_NETID_H
#define MICROVM_AGENT_NETID_H

/* A netlink socket for link events (non-blocking), or -1. */
int netid_open(void);
/* Handle the link events waiting on @fd (then netid_check). */
void netid_event(int fd);
/* Re-probe every virtio-net interface whose carrier went down and came
 * back up since last checked. Also called before serving a connection, so
 * that a command run right after a restore sees the new address even if
 * the link events are not read yet. */
void netid_check(void);

#endif
