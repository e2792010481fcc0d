// What ref-forwarder.c shares with its --flanneld loop (ref-forwarder-flanneld.c).
#ifndef REF_FORWARDER_H
#define REF_FORWARDER_H

#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

extern int tun_fd, udp_fd;
extern struct sockaddr_in peer;
extern int ttl_hop;                // decrement the TTL (flannel's UDP backend does)
extern volatile sig_atomic_t stop; // set by SIGTERM/SIGINT

void die(const char *what);
// TTL - 1 with the header checksum patched.
void ttl_decrement(uint8_t *ip);

int flanneld_configure(size_t buffer, const char *route);
size_t flanneld_buffer(void);
void flanneld_loop(void);

#endif
