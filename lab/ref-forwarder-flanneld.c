// ref-forwarder --flanneld: flanneld's UDP backend loop, one packet per system call, as
// flanneld's C proxy does it: a plain TUN (no virtio header, no offloads), a socket with no
// options set, an MTU-sized buffer, one route to the peer. Compiled with ref-forwarder.c, which
// opens the device and the socket and then calls flanneld_configure() and flanneld_loop().
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ref-forwarder.h"

static uint32_t route_net, route_mask;  // network order; mask 0 routes everything to the peer
static size_t fl_buf_len;
static struct {
  uint64_t polls, tun_reads, max_tun_read, sends, send_errors, recvs, tun_writes, no_route, ttl_expired, dropped;
} fl;

size_t flanneld_buffer(void) { return fl_buf_len; }

// flanneld's buffer is MTU-sized; the route is the one CIDR all traffic goes to the peer by
// (none: everything goes to the peer). Returns 0, or 2 after printing why the route is bad.
int flanneld_configure(size_t buffer, const char *route) {
  fl_buf_len = buffer;
  if (!route) return 0;
  char net[32];
  const char *slash = strchr(route, '/');
  size_t nl = slash ? (size_t)(slash - route) : strlen(route);
  int bits = slash ? atoi(slash + 1) : 32;
  if (nl >= sizeof net || bits < 0 || bits > 32) { fprintf(stderr, "ref-forwarder: bad route %s\n", route); return 2; }
  memcpy(net, route, nl);
  net[nl] = 0;
  if (inet_pton(AF_INET, net, &route_net) != 1) { fprintf(stderr, "ref-forwarder: bad route %s\n", route); return 2; }
  route_mask = bits ? htonl(~(uint32_t)0 << (32 - bits)) : 0;
  route_net &= route_mask;
  return 0;
}

// The TTL as flanneld treats it: decremented in both directions, the packet dropped at zero.
static int fl_ttl(uint8_t *ip) {
  if (ip[8] <= 1) { fl.ttl_expired++; return 0; }
  ttl_decrement(ip);
  return 1;
}

static int fl_tun_to_udp(uint8_t *buf) {
  ssize_t n = read(tun_fd, buf, fl_buf_len);
  if (n < 20) {
    if (n >= 0) fl.dropped++;
    return 0;  // EAGAIN, or a runt (flanneld also counts it as no activity)
  }
  fl.tun_reads++;
  if ((uint64_t)n > fl.max_tun_read) fl.max_tun_read = (uint64_t)n;
  uint32_t dst;
  memcpy(&dst, buf + 16, 4);
  if ((dst & route_mask) != route_net) { fl.no_route++; return 1; }
  if (ttl_hop && !fl_ttl(buf)) return 1;
  if (sendto(udp_fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, sizeof peer) != n) fl.send_errors++;
  fl.sends++;
  return 1;
}

static int fl_udp_to_tun(uint8_t *buf) {
  ssize_t n = recv(udp_fd, buf, fl_buf_len, MSG_DONTWAIT);
  if (n < 20) {
    if (n >= 0) fl.dropped++;
    return 0;
  }
  fl.recvs++;
  if (ttl_hop && !fl_ttl(buf)) return 1;
  while (write(tun_fd, buf, (size_t)n) < 0) {
    if (errno != EAGAIN && errno != EINTR) { fl.dropped++; break; }  // flanneld retries EAGAIN only
  }
  fl.tun_writes++;
  return 1;
}

void flanneld_loop(void) {
  uint8_t *buf = malloc(fl_buf_len);
  if (!buf) { fprintf(stderr, "ref-forwarder: alloc\n"); exit(1); }
  struct pollfd pfd[2] = {{tun_fd, POLLIN, 0}, {udp_fd, POLLIN, 0}};
  while (!stop) {
    if (poll(pfd, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    fl.polls++;
    if (!((pfd[0].revents | pfd[1].revents) & POLLIN)) continue;
    // Both directions one packet at a time until both are dry, without polling in between.
    while (fl_tun_to_udp(buf) + fl_udp_to_tun(buf)) {}
  }
  fprintf(stderr, "ref-forwarder counters: flanneld polls %llu tun_reads %llu max_tun_read %llu sendto %llu send_errors %llu "
          "recv %llu tun_writes %llu no_route %llu ttl_expired %llu dropped %llu\n",
          (unsigned long long)fl.polls, (unsigned long long)fl.tun_reads, (unsigned long long)fl.max_tun_read,
          (unsigned long long)fl.sends, (unsigned long long)fl.send_errors, (unsigned long long)fl.recvs,
          (unsigned long long)fl.tun_writes, (unsigned long long)fl.no_route, (unsigned long long)fl.ttl_expired,
          (unsigned long long)fl.dropped);
  free(buf);
}

