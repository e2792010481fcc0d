// ref-forwarder: a minimal single-threaded TUN <-> UDP forwarder in flannel's UDP wire format
// (the UDP payload is the bare inner IPv4 packet), using the same kernel interfaces as linen's
// native engine: a measurement reference only (scripts/perf-probe.mjs contender c-ref-udp,
// compiled on first use by lab/ref-forwarder.ts), never part of linen. It answers "how fast
// can this TUN/UDP design go on this machine", next to kernel VXLAN and linen in the same run.
//
//   ref-forwarder --tun NAME --listen IP:PORT --peer IP:PORT
//                 [--addr CIDR --mtu N --route CIDR]   configure the device as linen does
//                 [--no-verify]  merge without validating each TCP segment's checksum
//                 [--no-ttl]     do not decrement the TTL (flannel's UDP backend does)
//                 [--recv N]     messages per recvmmsg (default 8)
//                 [--flanneld]   flanneld's UDP backend loop instead (ref-forwarder-flanneld.c)
//                 [--threads]    one thread per direction instead of one loop for both
//                 [--sg]         split without copying payloads: each send is a gather list of
//                                per-segment headers and slices of the TUN read
//
// Egress (TUN -> UDP): IFF_VNET_HDR with TUN_F_CSUM|TSO4|TSO6; a TCPv4 super-packet is cut
// into gso_size segments (IP length, ID and checksum, TCP seq, FIN/PSH on the last only, full
// TCP checksum computed while copying); the segments go out with UDP_SEGMENT, at most 65,507
// bytes per message, every message of one round in one sendmmsg. Ingress (UDP -> TUN): UDP_GRO,
// recvmmsg; consecutive TCP segments of one flow (wireguard-go's rules) are merged into one
// super-packet written with one writev: a GSO_TCPV4 virtio_net_hdr, the first packet, then the
// other segments' payloads, without copying. Everything else is written alone with a zero header.
// Both fds are polled; after a wake-up the ready directions are worked in turn, each until it is
// dry (bounded), as linen's worker does. SIGTERM/SIGINT print counters to stderr and end the
// process (the device goes with its fd).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ref-forwarder.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

#define VNET_LEN 10            // struct virtio_net_hdr
#define VNET_F_NEEDS_CSUM 1
#define VNET_GSO_NONE 0
#define VNET_GSO_TCPV4 1
#define VNET_GSO_ECN 0x80
#define HEAD 16                // packet slots start VNET_LEN before a 16-aligned IP header
#define TUN_READ_MAX (VNET_LEN + 65535)
#define GSO_SEND_MAX 65507     // UDP payload limit of one IPv4 GSO send
#define UDP_MAX_SEGS 64        // UDP_MAX_SEGMENTS on kernels before 6.9
#define SOCKET_BUFFER (8 << 20)

#define EG_ARENA (2 << 20)     // non-GSO TUN packets kept in place until the round's sendmmsg
#define EG_SPLIT (2 << 20)     // split segments
#define EG_MSGS 256
#define EG_SG_IOV 16384     // --sg: gather entries of one round's messages
#define EG_READS_PER_ROUND 256
#define IN_BUF 65536
#define IN_MAX_MSGS 64
#define IN_CALLS_PER_ROUND 16
#define MERGE_IOV 256
#define WORK_ROUNDS 64         // rounds over both directions per wake-up

#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10

struct vnet_hdr {
  uint8_t flags, gso_type;
  uint16_t hdr_len, gso_size, csum_start, csum_offset;
} __attribute__((packed));

int tun_fd, udp_fd;
struct sockaddr_in peer;
int ttl_hop = 1;
volatile sig_atomic_t stop;
static int verify = 1, recv_msgs = 8, flanneld = 0, threads = 0, sg = 0;

static struct {
  uint64_t polls, rounds, tun_reads, gso_reads, segments, csum_completed, sendmmsg_calls, send_msgs, send_errors;
  uint64_t recvmmsg_calls, recv_msgs, datagrams, tun_writes, merged_writes, merged_segments, bad_csum, dropped, in_dropped;
} st;

// ---------------------------------------------------------------------------------------------
// Checksums: 64-bit words summed into 128 bits (add with carry), folded at the end. The ones'-
// complement sum does not depend on byte order as long as the result is stored in the same
// (memory) order it was read in, so no byte swapping is needed.

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return ntohs(v); }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return ntohl(v); }
static inline void st16(uint8_t *p, uint16_t v) { v = htons(v); memcpy(p, &v, 2); }
static inline void st32(uint8_t *p, uint32_t v) { v = htonl(v); memcpy(p, &v, 4); }

// Returns acc plus the sum of p[0..n), reduced below 2^33 so callers may keep adding to it.
// p must start at an even offset of the checksummed region.
static uint64_t sum_bytes(const uint8_t *p, size_t n, uint64_t acc0) {
  unsigned __int128 acc = acc0;
  while (n >= 32) {
    uint64_t a, b, c, d;
    memcpy(&a, p, 8); memcpy(&b, p + 8, 8); memcpy(&c, p + 16, 8); memcpy(&d, p + 24, 8);
    acc += a; acc += b; acc += c; acc += d;
    p += 32; n -= 32;
  }
  while (n >= 8) { uint64_t a; memcpy(&a, p, 8); acc += a; p += 8; n -= 8; }
  if (n) { uint64_t t = 0; memcpy(&t, p, n); acc += t; }  // the tail, zero-padded
  uint64_t lo = (uint64_t)acc, hi = (uint64_t)(acc >> 64);
  uint64_t s = lo + hi;
  s += s < lo;  // 2^64 = 1 (mod 2^16 - 1)
  s = (s & 0xffffffff) + (s >> 32);
  return (s & 0xffffffff) + (s >> 32);
}

// Copies n bytes and returns acc plus their sum (the copy is still in cache for the sum).
static uint64_t copy_sum(uint8_t *dst, const uint8_t *src, size_t n, uint64_t acc) {
  memcpy(dst, src, n);
  return sum_bytes(dst, n, acc);
}

static inline uint16_t fold(uint64_t acc) {
  acc = (acc & 0xffffffff) + (acc >> 32);
  acc = (acc & 0xffffffff) + (acc >> 32);
  acc = (acc & 0xffff) + (acc >> 16);
  acc = (acc & 0xffff) + (acc >> 16);
  acc = (acc & 0xffff) + (acc >> 16);
  return (uint16_t)acc;
}

// Pseudo-header sum in the same (memory-order) convention as sum_bytes.
static inline uint64_t pseudo(const uint8_t *ip, uint32_t proto, uint32_t l4len) {
  uint64_t acc = sum_bytes(ip + 12, 8, 0);
  acc += htons((uint16_t)proto);
  acc += htons((uint16_t)l4len);
  return acc;
}

static inline void store_sum(uint8_t *p, uint16_t memorder) { memcpy(p, &memorder, 2); }

static void ip_checksum(uint8_t *ip) {
  size_t ihl = (size_t)(ip[0] & 15) * 4;
  ip[10] = ip[11] = 0;
  store_sum(ip + 10, (uint16_t)~fold(sum_bytes(ip, ihl, 0)));
}

// TTL - 1 with the header checksum patched (RFC 1624: the TTL is the high byte of its word).
void ttl_decrement(uint8_t *ip) {
  ip[8]--;
  uint32_t c = ld16(ip + 10) + 0x100;
  st16(ip + 10, (uint16_t)((c & 0xffff) + (c >> 16)));
}

// ---------------------------------------------------------------------------------------------
// Egress

static uint8_t *eg_arena, *eg_split;
static size_t eg_arena_pos, eg_split_pos;
static struct mmsghdr eg_msgs[EG_MSGS];
static struct iovec eg_iov[EG_MSGS];
static union { char buf[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } eg_cmsg[EG_MSGS];
static int eg_count;
static struct iovec eg_sg_iov[EG_SG_IOV];
static int eg_sg_used;

// Queues one message: a gather list (iov, n entries, len bytes in all), UDP_SEGMENT when gso.
static void eg_add_iov(struct iovec *iov, size_t n, size_t len, uint16_t gso) {
  struct msghdr *m = &eg_msgs[eg_count].msg_hdr;
  memset(m, 0, sizeof *m);
  m->msg_name = &peer;
  m->msg_namelen = sizeof peer;
  m->msg_iov = iov;
  m->msg_iovlen = n;
  if (gso && len > gso) {
    struct cmsghdr *c = (struct cmsghdr *)eg_cmsg[eg_count].buf;
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(c), &gso, sizeof gso);
    m->msg_control = c;
    m->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
  }
  eg_count++;
}

static void eg_add(uint8_t *data, size_t len, uint16_t gso) {
  eg_iov[eg_count].iov_base = data;
  eg_iov[eg_count].iov_len = len;
  eg_add_iov(&eg_iov[eg_count], 1, len, gso);
}

static void eg_flush(void) {
  int i = 0;
  while (i < eg_count) {
    int n = sendmmsg(udp_fd, eg_msgs + i, (unsigned)(eg_count - i), 0);
    st.sendmmsg_calls++;
    if (n < 0) {
      if (errno == EINTR) continue;
      st.send_errors++;
      i++;  // the error belongs to message i: drop it, send the rest
      continue;
    }
    st.send_msgs += (uint64_t)n;
    i += n;
  }
  eg_count = 0;
  eg_arena_pos = 0;
  eg_split_pos = 0;
  eg_sg_used = 0;
}

// Completes a partial L4 checksum (NEEDS_CSUM without GSO).
static int complete_csum(uint8_t *ip, size_t len, const struct vnet_hdr *vh) {
  size_t start = vh->csum_start, off = (size_t)vh->csum_start + vh->csum_offset;
  if (start >= len || off + 2 > len) return -1;
  uint16_t partial;
  memcpy(&partial, ip + off, 2);
  ip[off] = ip[off + 1] = 0;
  store_sum(ip + off, (uint16_t)~fold(sum_bytes(ip + start, len - start, partial)));
  st.csum_completed++;
  return 0;
}

// How a TCPv4 super-packet is cut: its headers, the segments and the UDP_SEGMENT messages.
struct split_plan {
  size_t ihl, thl, hl, mss, payload, nseg, segsz, per_msg, nmsg;
  uint16_t id0;
  uint32_t seq0;
  uint8_t flags;
};

static int plan_split(uint8_t *ip, size_t len, const struct vnet_hdr *vh, struct split_plan *p) {
  p->ihl = (size_t)(ip[0] & 15) * 4;
  if (p->ihl < 20 || vh->csum_start != p->ihl || len < p->ihl + 20 || ip[9] != IPPROTO_TCP) return -1;
  p->thl = (size_t)(ip[p->ihl + 12] >> 4) * 4;
  p->hl = p->ihl + p->thl;
  p->mss = vh->gso_size;
  if (p->thl < 20 || p->hl > len || p->mss == 0) return -1;
  p->payload = len - p->hl;
  p->nseg = p->payload ? (p->payload + p->mss - 1) / p->mss : 1;
  p->segsz = p->hl + p->mss;
  p->per_msg = GSO_SEND_MAX / p->segsz;
  if (p->per_msg > UDP_MAX_SEGS) p->per_msg = UDP_MAX_SEGS;
  if (p->per_msg == 0) return -1;
  p->nmsg = (p->nseg + p->per_msg - 1) / p->per_msg;
  p->id0 = ld16(ip + 4);
  p->seq0 = ld32(ip + p->ihl + 4);
  p->flags = ip[p->ihl + 13];
  ip[p->ihl + 16] = ip[p->ihl + 17] = 0;  // the checksum field, summed as zero below
  return 0;
}

// Segment i's payload length (the last may be shorter).
static size_t segment_payload(const struct split_plan *p, size_t i) {
  if (!p->payload) return 0;
  size_t off = p->hl + i * p->mss;
  return off + p->mss <= p->hl + p->payload ? p->mss : p->hl + p->payload - off;
}

// Writes segment i's IP and TCP headers at s (IP length, ID and checksum, TCP seq, FIN/PSH on
// the last only) and returns the TCP checksum's sum so far: pseudo-header and TCP header.
static uint64_t segment_header(uint8_t *s, const uint8_t *ip, const struct split_plan *p, size_t i, size_t plen) {
  memcpy(s, ip, p->hl);
  st16(s + 2, (uint16_t)(p->hl + plen));
  st16(s + 4, (uint16_t)(p->id0 + i));
  ip_checksum(s);
  uint8_t *t = s + p->ihl;
  st32(t + 4, p->seq0 + (uint32_t)(i * p->mss));
  if (i + 1 < p->nseg) t[13] = p->flags & (uint8_t)~(TCP_FIN | TCP_PSH);
  return sum_bytes(t, p->thl, pseudo(s, IPPROTO_TCP, p->thl + plen));
}

// Cuts a TCPv4 super-packet into wire segments laid back to back in eg_split and queues them
// as UDP_SEGMENT messages of at most GSO_SEND_MAX bytes.
static int split_tcp4(uint8_t *ip, size_t len, const struct vnet_hdr *vh) {
  struct split_plan p;
  if (plan_split(ip, len, vh, &p) < 0) return -1;
  if (eg_split_pos + p.nseg * p.segsz + 64 > EG_SPLIT || eg_count + (int)p.nmsg > EG_MSGS) eg_flush();
  uint8_t *out = eg_split + eg_split_pos;
  uint8_t *msg_start = out;
  size_t in_msg = 0;
  for (size_t i = 0; i < p.nseg; i++) {
    size_t plen = segment_payload(&p, i);
    uint64_t acc = segment_header(out, ip, &p, i, plen);
    acc = copy_sum(out + p.hl, ip + p.hl + i * p.mss, plen, acc);
    store_sum(out + p.ihl + 16, (uint16_t)~fold(acc));
    out += p.hl + plen;
    st.segments++;
    if (++in_msg == p.per_msg || i + 1 == p.nseg) {
      eg_add(msg_start, (size_t)(out - msg_start), (uint16_t)p.segsz);
      msg_start = out;
      in_msg = 0;
    }
  }
  eg_split_pos += (size_t)(out - (eg_split + eg_split_pos) + 15) & ~(size_t)15;
  return 0;
}

// --sg: as split_tcp4, but only the segments' headers are written (into eg_split); each message
// is a gather list of header, payload slice, header, ... and the payloads stay in the TUN read,
// which must therefore stay in place until the flush. The checksum is a sum over the payload
// in place instead of a copy and a sum. Returns 1 when the caller must keep the read's slot.
static int split_tcp4_sg(uint8_t *ip, size_t len, const struct vnet_hdr *vh) {
  struct split_plan p;
  if (plan_split(ip, len, vh, &p) < 0) return -1;
  size_t hdr_stride = (p.hl + 15) & ~(size_t)15;
  if (p.nseg * hdr_stride > EG_SPLIT || 2 * p.nseg > EG_SG_IOV || (int)p.nmsg > EG_MSGS) return split_tcp4(ip, len, vh);
  if (eg_split_pos + p.nseg * hdr_stride > EG_SPLIT || eg_sg_used + 2 * (int)p.nseg > EG_SG_IOV || eg_count + (int)p.nmsg > EG_MSGS) eg_flush();
  struct iovec *msg_iov = &eg_sg_iov[eg_sg_used];
  size_t in_msg = 0, msg_len = 0;
  for (size_t i = 0; i < p.nseg; i++) {
    size_t plen = segment_payload(&p, i);
    uint8_t *s = eg_split + eg_split_pos, *payload = ip + p.hl + i * p.mss;
    eg_split_pos += hdr_stride;
    uint64_t acc = sum_bytes(payload, plen, segment_header(s, ip, &p, i, plen));
    store_sum(s + p.ihl + 16, (uint16_t)~fold(acc));
    eg_sg_iov[eg_sg_used++] = (struct iovec){s, p.hl};
    if (plen) eg_sg_iov[eg_sg_used++] = (struct iovec){payload, plen};
    msg_len += p.hl + plen;
    st.segments++;
    if (++in_msg == p.per_msg || i + 1 == p.nseg) {
      eg_add_iov(msg_iov, (size_t)(&eg_sg_iov[eg_sg_used] - msg_iov), msg_len, (uint16_t)p.segsz);
      msg_iov = &eg_sg_iov[eg_sg_used];
      msg_len = 0;
      in_msg = 0;
    }
  }
  return 1;
}

// Both rounds return what they took: the TUN packets read, or the messages received. A round
// that took its whole bound (EG_READS_PER_ROUND, in_round_max()) may have left more behind; any
// less, it stopped at EAGAIN and its fd was dry.
static int egress_round(void) {
  int got = 0;
  for (int r = 0; r < EG_READS_PER_ROUND; r++) {
    if (eg_arena_pos + HEAD + TUN_READ_MAX > EG_ARENA || eg_count + 1 > EG_MSGS) eg_flush();
    uint8_t *slot = eg_arena + eg_arena_pos + HEAD - VNET_LEN;
    ssize_t n = read(tun_fd, slot, TUN_READ_MAX);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // EAGAIN (or an error: leave it to the next poll)
    }
    st.tun_reads++;
    got++;
    if (n < VNET_LEN + 20) { st.dropped++; continue; }
    struct vnet_hdr vh;
    memcpy(&vh, slot, sizeof vh);
    uint8_t *ip = slot + VNET_LEN;
    size_t len = (size_t)n - VNET_LEN;
    if ((ip[0] >> 4) != 4 || ld16(ip + 2) > len) { st.dropped++; continue; }
    if (ttl_hop) {
      if (ip[8] <= 1) { st.dropped++; continue; }
      ttl_decrement(ip);
    }
    uint8_t gso = vh.gso_type & (uint8_t)~VNET_GSO_ECN;
    if (gso == VNET_GSO_TCPV4) {
      st.gso_reads++;
      int kept = sg ? split_tcp4_sg(ip, len, &vh) : split_tcp4(ip, len, &vh);
      if (kept < 0) st.dropped++;
      // The payloads are sent from the slot (--sg): keep it until the flush. A flush inside the
      // split emptied the arena in front of it, so the next slot simply follows this one.
      if (kept == 1) eg_arena_pos = (size_t)(slot - eg_arena) - (HEAD - VNET_LEN) + ((HEAD + (size_t)n + 15) & ~(size_t)15);
      continue;  // otherwise the slot is free again: the segments were copied out
    }
    if (gso != VNET_GSO_NONE) { st.dropped++; continue; }
    if ((vh.flags & VNET_F_NEEDS_CSUM) && complete_csum(ip, len, &vh) < 0) { st.dropped++; continue; }
    eg_add(ip, len, 0);
    eg_arena_pos += (HEAD + (size_t)n + 15) & ~(size_t)15;
  }
  if (eg_count) eg_flush();
  return got;
}

// ---------------------------------------------------------------------------------------------
// Ingress

static uint8_t *in_bufs;
static struct mmsghdr in_msgs[IN_MAX_MSGS];
static struct iovec in_iov[IN_MAX_MSGS];
static union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } in_cmsg[IN_MAX_MSGS];
static const uint8_t zero_vnet[VNET_LEN];

// The open merge: a head packet (written whole) followed by other segments' payloads.
static struct {
  int open;
  uint8_t *head;        // IP header of the first segment
  size_t ihl, thl;
  size_t total;         // IP total length of the merged packet
  size_t mss;           // payload size of the first segment
  uint32_t next_seq;
  int closed;           // a shorter or PSH segment was appended: nothing may follow
  int count;
  struct vnet_hdr vh;
  struct iovec iov[MERGE_IOV];
} m;

static void tun_write(struct iovec *iov, int n) {
  if (writev(tun_fd, iov, n) < 0) st.in_dropped++;
  st.tun_writes++;
}

static void write_alone(uint8_t *ip, size_t len) {
  struct iovec iov[2] = {{(void *)zero_vnet, VNET_LEN}, {ip, len}};
  tun_write(iov, 2);
}

static void merge_flush(void) {
  if (!m.open) return;
  m.open = 0;
  if (m.count == 1) {
    write_alone(m.head, m.total);
    return;
  }
  uint8_t *ip = m.head, *tcp = ip + m.ihl;
  st16(ip + 2, (uint16_t)m.total);
  ip_checksum(ip);
  tcp[16] = tcp[17] = 0;
  store_sum(tcp + 16, fold(pseudo(ip, IPPROTO_TCP, m.total - m.ihl)));  // the kernel completes it
  memset(&m.vh, 0, sizeof m.vh);
  m.vh.flags = VNET_F_NEEDS_CSUM;
  m.vh.gso_type = VNET_GSO_TCPV4;
  m.vh.hdr_len = (uint16_t)(m.ihl + m.thl);
  m.vh.gso_size = (uint16_t)m.mss;
  m.vh.csum_start = (uint16_t)m.ihl;
  m.vh.csum_offset = 16;
  m.iov[0].iov_base = &m.vh;
  m.iov[0].iov_len = VNET_LEN;
  m.iov[1].iov_len = m.ihl + m.thl + m.mss;  // the head with its own payload
  st.merged_writes++;
  st.merged_segments += (uint64_t)m.count;
  tun_write(m.iov, m.count + 1);
}

static int tcp_csum_ok(const uint8_t *ip, size_t len, size_t ihl) {
  return fold(sum_bytes(ip + ihl, len - ihl, pseudo(ip, IPPROTO_TCP, len - ihl))) == 0xffff;
}

static void ingress_packet(uint8_t *ip, size_t len) {
  st.datagrams++;
  if (len < 20 || (ip[0] >> 4) != 4 || (ip[0] & 15) < 5) { st.in_dropped++; return; }
  size_t tot = ld16(ip + 2);
  if (tot > len || tot < (size_t)(ip[0] & 15) * 4) { st.in_dropped++; return; }
  len = tot;
  if (ttl_hop) {
    if (ip[8] <= 1) { st.in_dropped++; return; }
    ttl_decrement(ip);
  }
  size_t ihl = (size_t)(ip[0] & 15) * 4;
  // A merge candidate: plain IPv4 header, unfragmented TCP, ACK or ACK|PSH, some payload.
  int cand = ihl == 20 && ip[9] == IPPROTO_TCP && (ld16(ip + 6) & 0x3fff) == 0 && len >= 40;
  size_t thl = 0, plen = 0;
  uint8_t *tcp = ip + ihl;
  if (cand) {
    thl = (size_t)(tcp[12] >> 4) * 4;
    cand = thl >= 20 && ihl + thl < len && (tcp[13] == TCP_ACK || tcp[13] == (TCP_ACK | TCP_PSH));
    if (cand) plen = len - ihl - thl;
  }
  if (cand && verify && !tcp_csum_ok(ip, len, ihl)) { st.bad_csum++; cand = 0; }
  if (!cand) {
    merge_flush();
    write_alone(ip, len);
    return;
  }
  uint32_t seq = ld32(tcp + 4);
  if (m.open) {
    uint8_t *h = m.head, *ht = h + m.ihl;
    int same = !m.closed && m.count < MERGE_IOV - 1 && thl == m.thl && seq == m.next_seq &&
               plen <= m.mss && m.total + plen <= 65535 &&
               ip[1] == h[1] && ip[8] == h[8] && (ip[6] & 0xe0) == (h[6] & 0xe0) &&
               memcmp(ip + 12, h + 12, 8) == 0 &&          // addresses
               memcmp(tcp, ht, 4) == 0 &&                  // ports
               memcmp(tcp + 8, ht + 8, 4) == 0 &&          // ack
               tcp[12] == ht[12] && memcmp(tcp + 14, ht + 14, 2) == 0 &&  // offset, window
               (tcp[13] & ~TCP_PSH) == (ht[13] & ~TCP_PSH) &&
               memcmp(tcp + 20, ht + 20, thl - 20) == 0;   // options, byte for byte
    if (same) {
      m.iov[m.count + 1].iov_base = tcp + thl;
      m.iov[m.count + 1].iov_len = plen;
      m.count++;
      m.total += plen;
      m.next_seq = seq + (uint32_t)plen;
      if (plen < m.mss) m.closed = 1;
      if (tcp[13] & TCP_PSH) { ht[13] |= TCP_PSH; m.closed = 1; }
      return;
    }
    merge_flush();
  }
  m.open = 1;
  m.head = ip;
  m.ihl = ihl;
  m.thl = thl;
  m.total = len;
  m.mss = plen;
  m.next_seq = seq + (uint32_t)plen;
  m.closed = (tcp[13] & TCP_PSH) != 0;
  m.count = 1;
  m.iov[1].iov_base = ip;
}

static int in_round_max(void) { return IN_CALLS_PER_ROUND * recv_msgs; }

static int ingress_round(void) {
  int got = 0;
  for (int call = 0; call < IN_CALLS_PER_ROUND; call++) {
    for (int i = 0; i < recv_msgs; i++) {
      struct msghdr *h = &in_msgs[i].msg_hdr;
      in_iov[i].iov_base = in_bufs + (size_t)i * IN_BUF;
      in_iov[i].iov_len = IN_BUF;
      memset(h, 0, sizeof *h);
      h->msg_iov = &in_iov[i];
      h->msg_iovlen = 1;
      h->msg_control = in_cmsg[i].buf;
      h->msg_controllen = sizeof in_cmsg[i].buf;
    }
    int n = recvmmsg(udp_fd, in_msgs, (unsigned)recv_msgs, MSG_DONTWAIT, NULL);
    st.recvmmsg_calls++;
    if (n <= 0) break;
    st.recv_msgs += (uint64_t)n;
    got += n;
    for (int i = 0; i < n; i++) {
      struct msghdr *h = &in_msgs[i].msg_hdr;
      size_t len = in_msgs[i].msg_len;
      if (h->msg_flags & MSG_TRUNC) { st.in_dropped++; continue; }
      size_t gso = len;
      for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int g;
          memcpy(&g, CMSG_DATA(c), sizeof g);
          if (g > 0) gso = (size_t)g;
        }
      }
      uint8_t *p = in_bufs + (size_t)i * IN_BUF;
      for (size_t off = 0; off < len; off += gso) ingress_packet(p + off, len - off < gso ? len - off : gso);
    }
    merge_flush();  // the buffers are reused by the next recvmmsg
    if (n < recv_msgs) break;
  }
  return got;
}

// --threads: each direction polls its own fd and works until dry, so that one direction's
// batch never waits behind the other's.
static void direction_loop(int fd, int (*round_fn)(void)) {
  struct pollfd pfd = {fd, POLLIN, 0};
  while (!stop) {
    if (poll(&pfd, 1, 200) < 0) {  // a timeout: the signal may have gone to the other thread
      if (errno == EINTR) continue;
      die("poll");
    }
    for (int round = 0; round < WORK_ROUNDS; round++) {
      st.rounds++;  // racy between the threads: a rough figure only
      if (round_fn() == 0) break;
    }
  }
}

static void *egress_thread(void *unused) {
  (void)unused;
  direction_loop(tun_fd, egress_round);
  return NULL;
}

// ---------------------------------------------------------------------------------------------
// Set-up

void die(const char *what) {
  fprintf(stderr, "ref-forwarder: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void run_ip(char *const argv[]) {
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    execvp("ip", argv);
    _exit(127);
  }
  int status;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "ref-forwarder: ip %s %s %s ... failed\n", argv[1], argv[2], argv[3]);
    exit(1);
  }
}

static void write_proc(const char *fmt, const char *dev, const char *value) {
  char path[128];
  snprintf(path, sizeof path, fmt, dev);
  int fd = open(path, O_WRONLY);
  if (fd < 0) return;  // no IPv6 here: nothing to turn off
  if (write(fd, value, strlen(value)) < 0) { /* best effort, as linen */ }
  close(fd);
}

static void parse_addr(const char *s, struct sockaddr_in *a) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof host) { fprintf(stderr, "ref-forwarder: bad address %s\n", s); exit(2); }
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = 0;
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &a->sin_addr) != 1) { fprintf(stderr, "ref-forwarder: bad address %s\n", s); exit(2); }
}

static void on_signal(int sig) { (void)sig; stop = 1; }

static void setint(int level, int name, int v) {
  if (setsockopt(udp_fd, level, name, &v, sizeof v) < 0 && name != SO_RCVBUFFORCE && name != SO_SNDBUFFORCE) die("setsockopt");
}

int main(int argc, char **argv) {
  const char *tun = NULL, *listen_at = NULL, *peer_at = NULL, *addr = NULL, *mtu = NULL, *route = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--no-verify")) verify = 0;
    else if (!strcmp(a, "--no-ttl")) ttl_hop = 0;
    else if (!strcmp(a, "--flanneld")) flanneld = 1;
    else if (!strcmp(a, "--threads")) threads = 1;
    else if (!strcmp(a, "--sg")) sg = 1;
    else if (v && !strcmp(a, "--tun")) tun = v, i++;
    else if (v && !strcmp(a, "--listen")) listen_at = v, i++;
    else if (v && !strcmp(a, "--peer")) peer_at = v, i++;
    else if (v && !strcmp(a, "--addr")) addr = v, i++;
    else if (v && !strcmp(a, "--mtu")) mtu = v, i++;
    else if (v && !strcmp(a, "--route")) route = v, i++;
    else if (v && !strcmp(a, "--recv")) recv_msgs = atoi(v), i++;
    else { fprintf(stderr, "ref-forwarder: unknown or incomplete option %s\n", a); return 2; }
  }
  if (!tun || !listen_at || !peer_at || strlen(tun) >= IFNAMSIZ || recv_msgs < 1 || recv_msgs > IN_MAX_MSGS) {
    fprintf(stderr, "usage: ref-forwarder --tun NAME --listen IP:PORT --peer IP:PORT [--addr CIDR] [--mtu N] [--route CIDR] [--no-verify] [--no-ttl] [--recv N] [--flanneld] [--threads] [--sg]\n");
    return 2;
  }
  struct sockaddr_in local;
  parse_addr(listen_at, &local);
  parse_addr(peer_at, &peer);

  tun_fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (tun_fd < 0) die("open /dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, tun, IFNAMSIZ - 1);
  // flanneld opens its TUN as plain IFF_TUN | IFF_NO_PI: no virtio header, no offloads.
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (flanneld ? 0 : IFF_VNET_HDR);
  if (ioctl(tun_fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
  if (!flanneld) {
    int hdrsz = VNET_LEN;
    if (ioctl(tun_fd, TUNSETVNETHDRSZ, &hdrsz) < 0) die("TUNSETVNETHDRSZ");
    if (ioctl(tun_fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)) < 0) die("TUNSETOFFLOAD");
  }
  if (fcntl(tun_fd, F_SETFL, fcntl(tun_fd, F_GETFL) | O_NONBLOCK) < 0) die("O_NONBLOCK");

  // The device as linen's configureTun leaves it: MTU, own /32, no IPv6, up, accept_local, route.
  if (mtu) run_ip((char *[]){"ip", "link", "set", "dev", (char *)tun, "mtu", (char *)mtu, NULL});
  if (addr) run_ip((char *[]){"ip", "addr", "replace", (char *)addr, "dev", (char *)tun, NULL});
  write_proc("/proc/sys/net/ipv6/conf/%s/disable_ipv6", tun, "1");
  run_ip((char *[]){"ip", "link", "set", "dev", (char *)tun, "up", NULL});
  write_proc("/proc/sys/net/ipv4/conf/%s/accept_local", tun, "1");
  if (route) run_ip((char *[]){"ip", "route", "replace", (char *)route, "dev", (char *)tun, NULL});

  udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (udp_fd < 0) die("socket");
  if (!flanneld) {  // flanneld's socket is net.ListenUDP's: no options set
    setint(SOL_SOCKET, SO_RCVBUF, SOCKET_BUFFER);
    setint(SOL_SOCKET, SO_RCVBUFFORCE, SOCKET_BUFFER);
    setint(SOL_SOCKET, SO_SNDBUF, SOCKET_BUFFER);
    setint(SOL_SOCKET, SO_SNDBUFFORCE, SOCKET_BUFFER);
    setint(IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT);
    setint(SOL_UDP, UDP_GRO, 1);
  }
  if (bind(udp_fd, (struct sockaddr *)&local, sizeof local) < 0) die("bind");

  if (flanneld && flanneld_configure(mtu ? (size_t)atoi(mtu) : 65535, route) != 0) return 2;
  eg_arena = aligned_alloc(64, EG_ARENA);
  eg_split = aligned_alloc(64, EG_SPLIT);
  in_bufs = aligned_alloc(64, (size_t)IN_MAX_MSGS * IN_BUF);
  if (!eg_arena || !eg_split || !in_bufs) die("alloc");

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  if (flanneld) {
    int rcv = 0, snd = 0;
    socklen_t l1 = sizeof rcv, l2 = sizeof snd;
    getsockopt(udp_fd, SOL_SOCKET, SO_RCVBUF, &rcv, &l1);
    getsockopt(udp_fd, SOL_SOCKET, SO_SNDBUF, &snd, &l2);
    printf("ref-forwarder ready: flanneld loop, tun %s, listen %s, peer %s, ttl %d, buffer %zu, SO_RCVBUF %d, SO_SNDBUF %d\n",
           tun, listen_at, peer_at, ttl_hop, flanneld_buffer(), rcv, snd);
    fflush(stdout);
    flanneld_loop();
    return 0;
  }
  printf("ref-forwarder ready: tun %s, listen %s, peer %s, verify %d, ttl %d, recv %d, threads %d, sg %d\n", tun, listen_at, peer_at, verify, ttl_hop, recv_msgs, threads, sg);
  fflush(stdout);

  if (threads) {
    pthread_t eg;
    if (pthread_create(&eg, NULL, egress_thread, NULL) != 0) die("pthread_create");
    direction_loop(udp_fd, ingress_round);
    pthread_join(eg, NULL);
  }
  struct pollfd pfd[2] = {{tun_fd, POLLIN, 0}, {udp_fd, POLLIN, 0}};
  while (!stop && !threads) {
    int r = poll(pfd, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    // As linen's worker: the directions poll() found ready, each until it is dry (bounded),
    // then poll again (one call for both fds instead of a read that finds each empty).
    const short ready = POLLIN | POLLERR | POLLHUP;  // ingress also on POLLERR: the receive clears it
    int eg = (pfd[0].revents & ready) != 0, in = (pfd[1].revents & ready) != 0;
    for (int round = 0; round < WORK_ROUNDS && (eg || in); round++) {
      st.rounds++;
      if (eg) eg = egress_round() == EG_READS_PER_ROUND;
      if (in) in = ingress_round() == in_round_max();
    }
    st.polls++;
  }
  fprintf(stderr,
          "ref-forwarder counters: polls %llu rounds %llu tun_reads %llu gso_reads %llu segments %llu csum_completed %llu sendmmsg %llu send_msgs %llu send_errors %llu "
          "recvmmsg %llu recv_msgs %llu datagrams %llu tun_writes %llu merged_writes %llu merged_segments %llu bad_csum %llu dropped %llu in_dropped %llu\n",
          (unsigned long long)st.polls, (unsigned long long)st.rounds, (unsigned long long)st.tun_reads, (unsigned long long)st.gso_reads, (unsigned long long)st.segments,
          (unsigned long long)st.csum_completed, (unsigned long long)st.sendmmsg_calls, (unsigned long long)st.send_msgs,
          (unsigned long long)st.send_errors, (unsigned long long)st.recvmmsg_calls, (unsigned long long)st.recv_msgs,
          (unsigned long long)st.datagrams, (unsigned long long)st.tun_writes, (unsigned long long)st.merged_writes,
          (unsigned long long)st.merged_segments, (unsigned long long)st.bad_csum, (unsigned long long)st.dropped, (unsigned long long)st.in_dropped);
  return 0;
}
