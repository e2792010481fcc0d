// Kernel routes over rtnetlink, off the JS thread: host-gw and DirectRouting program one route
// per peer, and a `fork(ip)` per route took seconds at a thousand peers. Each call validates its
// arguments on the calling thread, then does all its netlink work on the libuv thread pool and
// settles a promise. Requests go out in chunks of ROUTE_CHUNK messages per sendmsg, and every
// request gets exactly one answer (an ack, an error or the looked-up route), matched by sequence
// number. Only IPv4 routes in the main table.
#define _GNU_SOURCE
#include "linen_route.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif
#ifndef NLM_F_ACK_TLVS
#define NLM_F_ACK_TLVS 0x200
#define NLMSGERR_ATTR_MSG 1
#endif

#define ROUTE_OP_REPLACE 1
#define ROUTE_OP_DELETE 2
#define ROUTE_OP_GET 3
#define ROUTE_OP_WORDS 4        // kind, destination, prefix length, gateway (host byte order)
#define ROUTE_MAX_OPS 65536     // per routeBatch call
#define ROUTE_CHUNK 64          // requests per sendmsg: their answers fit the receive buffer
#define ROUTE_RCV_TIMEOUT_S 5   // a kernel that stops answering fails the batch, not the thread
#define ROUTE_DUMP_WORDS 3      // destination, prefix length, gateway
#define ROUTE_DUMP_TRIES 3      // dumps when the table keeps changing under one
#define ROUTE_MSG_LEN 160
#define ROUTE_BUF 65536         // receive buffer: a chunk's answers, or a part of a dump

typedef struct {
  int err;                  // 0 or a positive errno
  char msg[ROUTE_MSG_LEN];  // the kernel's extended ack message, or ""
  uint32_t type;            // get: rtm_type of the route found
  uint32_t gateway;         // get: RTA_GATEWAY (host order), valid when has_gateway
  int has_gateway;
  char dev[IF_NAMESIZE];    // get: the output interface, "" when none
  int answered;
} route_result;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char dev[IF_NAMESIZE];
  int dump;                 // routeDump instead of routeBatch
  uint32_t *ops;
  size_t count;
  route_result *results;
  uint32_t *rows;           // dump: ROUTE_DUMP_WORDS per route
  size_t rows_len, rows_cap;
  int err;                  // the whole call failed: positive errno
  char where[64];
} route_job;

// ---- netlink ----------------------------------------------------------------------------------

static int nl_open(void) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return -errno;
  int one = 1, rcvbuf = 1 << 20;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct timeval tv = {ROUTE_RCV_TIMEOUT_S, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

static void put_attr(struct nlmsghdr *h, unsigned short type, const void *data, unsigned short len) {
  struct rtattr *a = (struct rtattr *)((char *)h + NLMSG_ALIGN(h->nlmsg_len));
  a->rta_type = type;
  a->rta_len = RTA_LENGTH(len);
  memcpy(RTA_DATA(a), data, len);
  h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + RTA_ALIGN(a->rta_len);
}

// One request per op into buf (room for ROUTE_CHUNK of them); returns its length.
static size_t put_request(char *buf, const uint32_t *op, uint32_t seq, int ifindex) {
  struct nlmsghdr *h = (struct nlmsghdr *)buf;
  memset(h, 0, NLMSG_SPACE(sizeof(struct rtmsg)));
  h->nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
  h->nlmsg_seq = seq;
  struct rtmsg *r = NLMSG_DATA(h);
  r->rtm_family = AF_INET;
  r->rtm_dst_len = (unsigned char)op[2];
  uint32_t dst = htonl(op[1]), gw = htonl(op[3]);
  if (op[0] == ROUTE_OP_GET) {
    h->nlmsg_type = RTM_GETROUTE;
    h->nlmsg_flags = NLM_F_REQUEST;  // answered by the route, or an error
    put_attr(h, RTA_DST, &dst, 4);
    return NLMSG_ALIGN(h->nlmsg_len);
  }
  // As `ip route replace|del <dst> via <gw> dev <dev>` asks.
  r->rtm_table = RT_TABLE_MAIN;
  if (op[0] == ROUTE_OP_REPLACE) {
    h->nlmsg_type = RTM_NEWROUTE;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    r->rtm_protocol = RTPROT_BOOT;
    r->rtm_scope = RT_SCOPE_UNIVERSE;
    r->rtm_type = RTN_UNICAST;
  } else {
    h->nlmsg_type = RTM_DELROUTE;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    r->rtm_scope = RT_SCOPE_NOWHERE;
  }
  put_attr(h, RTA_DST, &dst, 4);
  put_attr(h, RTA_GATEWAY, &gw, 4);
  put_attr(h, RTA_OIF, &ifindex, 4);
  return NLMSG_ALIGN(h->nlmsg_len);
}

static void read_error(route_result *res, struct nlmsghdr *h) {
  size_t len = h->nlmsg_len - NLMSG_HDRLEN;
  if (len < sizeof(struct nlmsgerr)) { res->err = EPROTO; return; }
  struct nlmsgerr *e = NLMSG_DATA(h);
  res->err = -e->error;
  if (!(h->nlmsg_flags & NLM_F_ACK_TLVS)) return;
  // NETLINK_CAP_ACK: only the request's header follows, then the extended ack attributes.
  size_t off = sizeof(struct nlmsgerr);
  struct rtattr *a = (struct rtattr *)((char *)e + off);
  int left = (int)(len - off);
  for (; RTA_OK(a, left); a = RTA_NEXT(a, left)) {
    if (a->rta_type != NLMSGERR_ATTR_MSG || RTA_PAYLOAD(a) == 0) continue;
    size_t n = RTA_PAYLOAD(a);
    if (n >= sizeof res->msg) n = sizeof res->msg - 1;
    memcpy(res->msg, RTA_DATA(a), n);
    res->msg[n] = 0;
    size_t k = strlen(res->msg);
    while (k > 0 && (res->msg[k - 1] == '\n' || res->msg[k - 1] == '.')) res->msg[--k] = 0;
  }
}

static void read_route(route_result *res, struct nlmsghdr *h) {
  struct rtmsg *r = NLMSG_DATA(h);
  res->type = r->rtm_type;
  struct rtattr *a = RTM_RTA(r);
  int left = (int)RTM_PAYLOAD(h);
  for (; RTA_OK(a, left); a = RTA_NEXT(a, left)) {
    if (a->rta_type == RTA_GATEWAY && RTA_PAYLOAD(a) == 4) {
      uint32_t gw;
      memcpy(&gw, RTA_DATA(a), 4);
      res->gateway = ntohl(gw);
      res->has_gateway = 1;
    } else if (a->rta_type == RTA_VIA) {
      res->has_gateway = 1;  // an IPv6 next hop: not a directly connected network either
    } else if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) == 4) {
      int oif;
      memcpy(&oif, RTA_DATA(a), 4);
      if (!if_indextoname((unsigned)oif, res->dev)) snprintf(res->dev, sizeof res->dev, "if%d", oif);
    }
  }
}

// Receives until every request of seq [first, first + n) is answered. Returns 0 or -errno.
static int recv_answers(int fd, route_job *j, size_t base, uint32_t first, size_t n, char *buf, size_t cap) {
  size_t pending = n;
  while (pending > 0) {
    ssize_t got = recv(fd, buf, cap, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    int left = (int)got;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      uint32_t i = h->nlmsg_seq - first;
      if (h->nlmsg_seq < first || i >= n) continue;
      route_result *res = &j->results[base + i];
      if (res->answered) continue;
      if (h->nlmsg_type == NLMSG_ERROR) read_error(res, h);
      else if (h->nlmsg_type == RTM_NEWROUTE) read_route(res, h);
      else continue;
      res->answered = 1;
      pending--;
    }
  }
  return 0;
}

static void job_fail(route_job *j, int err, const char *where) {
  j->err = err;
  snprintf(j->where, sizeof j->where, "%s", where);
}

// Resolves the interface (unless 0 is fine: lookups only), opens the socket and the receive
// buffer of ROUTE_BUF bytes. Returns 0, or fails the job and returns -1.
static int job_open(route_job *j, int needs_dev, int *ifindex, int *fd, char **buf) {
  *ifindex = 0;
  if (needs_dev && (*ifindex = (int)if_nametoindex(j->dev)) == 0) {
    int err = errno ? errno : ENODEV;
    char where[IF_NAMESIZE + 32];
    snprintf(where, sizeof where, "if_nametoindex(%s)", j->dev);
    job_fail(j, err, where);
    return -1;
  }
  if ((*fd = nl_open()) < 0) { job_fail(j, -*fd, "netlink socket"); return -1; }
  if (!(*buf = malloc(ROUTE_BUF))) { close(*fd); job_fail(j, ENOMEM, "malloc"); return -1; }
  return 0;
}

static void run_batch(route_job *j) {
  int needs_dev = 0, ifindex, fd;
  char *buf;
  size_t cap = ROUTE_BUF;
  for (size_t i = 0; i < j->count; i++) needs_dev |= j->ops[i * ROUTE_OP_WORDS] != ROUTE_OP_GET;
  if (job_open(j, needs_dev, &ifindex, &fd, &buf) < 0) return;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  uint32_t seq = 1;
  for (size_t base = 0; base < j->count; base += ROUTE_CHUNK) {
    size_t n = j->count - base < ROUTE_CHUNK ? j->count - base : ROUTE_CHUNK;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += put_request(buf + len, &j->ops[(base + i) * ROUTE_OP_WORDS], seq + (uint32_t)i, ifindex);
    if (sendto(fd, buf, len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
      job_fail(j, errno, "netlink send"); break;
    }
    int r = recv_answers(fd, j, base, seq, n, buf, cap);
    if (r < 0) { job_fail(j, -r, "netlink receive"); break; }
    seq += (uint32_t)n;
  }
  free(buf);
  close(fd);
}

static int push_row(route_job *j, uint32_t dst, uint32_t len, uint32_t gw) {
  if (j->rows_len + ROUTE_DUMP_WORDS > j->rows_cap) {
    size_t cap = j->rows_cap ? j->rows_cap * 2 : 256 * ROUTE_DUMP_WORDS;
    uint32_t *p = realloc(j->rows, cap * sizeof *p);
    if (!p) return -ENOMEM;
    j->rows = p;
    j->rows_cap = cap;
  }
  j->rows[j->rows_len++] = dst;
  j->rows[j->rows_len++] = len;
  j->rows[j->rows_len++] = gw;
  return 0;
}

// Keeps the main table's unicast routes with a gateway out of ifindex.
static int dump_row(route_job *j, struct nlmsghdr *h, int ifindex) {
  struct rtmsg *r = NLMSG_DATA(h);
  if (r->rtm_family != AF_INET || r->rtm_type != RTN_UNICAST) return 0;
  uint32_t table = r->rtm_table, dst = 0, gw = 0;
  int oif = 0, has_gw = 0;
  struct rtattr *a = RTM_RTA(r);
  int left = (int)RTM_PAYLOAD(h);
  for (; RTA_OK(a, left); a = RTA_NEXT(a, left)) {
    if (a->rta_type == RTA_TABLE && RTA_PAYLOAD(a) == 4) memcpy(&table, RTA_DATA(a), 4);
    else if (a->rta_type == RTA_DST && RTA_PAYLOAD(a) == 4) { memcpy(&dst, RTA_DATA(a), 4); dst = ntohl(dst); }
    else if (a->rta_type == RTA_GATEWAY && RTA_PAYLOAD(a) == 4) { memcpy(&gw, RTA_DATA(a), 4); gw = ntohl(gw); has_gw = 1; }
    else if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) == 4) memcpy(&oif, RTA_DATA(a), 4);
  }
  if (table != RT_TABLE_MAIN || oif != ifindex || !has_gw) return 0;
  return push_row(j, dst, r->rtm_dst_len, gw);
}

// One dump; returns 1 when the kernel says the table changed during it (NLM_F_DUMP_INTR).
static int dump_once(route_job *j, int fd, char *buf, size_t cap, int ifindex) {
  int interrupted = 0;
  struct {
    struct nlmsghdr h;
    struct rtmsg r;
  } req = {
    .h = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg)), .nlmsg_type = RTM_GETROUTE, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1},
    .r = {.rtm_family = AF_INET, .rtm_table = RT_TABLE_MAIN},
  };
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  if (sendto(fd, &req, req.h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
    job_fail(j, errno, "netlink send");
    return 0;
  }
  for (;;) {
    ssize_t got = recv(fd, buf, cap, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      job_fail(j, errno, "netlink receive");
      return 0;
    }
    int left = (int)got;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != 1) continue;
      if (h->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = 1;
      if (h->nlmsg_type == NLMSG_DONE) return interrupted;
      if (h->nlmsg_type == NLMSG_ERROR) {
        route_result r = {0};
        read_error(&r, h);
        job_fail(j, r.err ? r.err : EPROTO, "route dump");
        return 0;
      }
      if (h->nlmsg_type == RTM_NEWROUTE && dump_row(j, h, ifindex) < 0) {
        job_fail(j, ENOMEM, "malloc");
        return 0;
      }
    }
  }
}

static void run_dump(route_job *j) {
  int ifindex, fd;
  char *buf;
  if (job_open(j, 1, &ifindex, &fd, &buf) < 0) return;
  // A table that changed during the dump may have been read partly: read it again (a route
  // seen missing by mistake would be put back and counted as restored).
  for (int tries = 0; tries < ROUTE_DUMP_TRIES; tries++) {
    j->rows_len = 0;
    if (!dump_once(j, fd, buf, ROUTE_BUF, ifindex) || j->err) break;
  }
  free(buf);
  close(fd);
}

// ---- N-API ------------------------------------------------------------------------------------

static void execute(napi_env env, void *data) {
  (void)env;
  route_job *j = data;
  if (j->dump) run_dump(j);
  else run_batch(j);
}

static void set_u32(napi_env env, napi_value o, const char *name, uint32_t v) {
  napi_value x;
  napi_create_uint32(env, v, &x);
  napi_set_named_property(env, o, name, x);
}

static void set_str(napi_env env, napi_value o, const char *name, const char *s) {
  napi_value x;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &x);
  napi_set_named_property(env, o, name, x);
}

static napi_value batch_results(napi_env env, route_job *j) {
  napi_value arr;
  napi_create_array_with_length(env, j->count, &arr);
  for (size_t i = 0; i < j->count; i++) {
    route_result *r = &j->results[i];
    napi_value o;
    napi_create_object(env, &o);
    set_u32(env, o, "errno", (uint32_t)r->err);
    char msg[ROUTE_MSG_LEN + 64];
    if (r->err == 0) msg[0] = 0;
    else if (r->msg[0]) snprintf(msg, sizeof msg, "%s", r->msg);
    else snprintf(msg, sizeof msg, "%s", strerror(r->err));
    set_str(env, o, "error", msg);
    if (j->ops[i * ROUTE_OP_WORDS] == ROUTE_OP_GET && r->err == 0) {
      set_u32(env, o, "type", r->type);
      if (r->has_gateway) set_u32(env, o, "gateway", r->gateway);
      set_str(env, o, "dev", r->dev);
    }
    napi_set_element(env, arr, (uint32_t)i, o);
  }
  return arr;
}

static napi_value dump_rows(napi_env env, route_job *j) {
  void *data;
  napi_value ab, ta;
  size_t bytes = j->rows_len * sizeof(uint32_t);
  napi_create_arraybuffer(env, bytes, &data, &ab);
  if (bytes) memcpy(data, j->rows, bytes);
  napi_create_typedarray(env, napi_uint32_array, j->rows_len, ab, 0, &ta);
  return ta;
}

static void complete(napi_env env, napi_status status, void *data) {
  route_job *j = data;
  if (status != napi_ok) napi_reject_deferred(env, j->deferred, linen_errno_error(env, "route work", ECANCELED));
  else if (j->err) napi_reject_deferred(env, j->deferred, linen_errno_error(env, j->where, j->err));
  else napi_resolve_deferred(env, j->deferred, j->dump ? dump_rows(env, j) : batch_results(env, j));
  napi_delete_async_work(env, j->work);
  free(j->ops);
  free(j->results);
  free(j->rows);
  free(j);
}

static napi_value throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

// Reads the interface name argument; 0 when it is no valid interface name (an error is thrown).
static int read_dev(napi_env env, napi_value v, char *dev) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, dev, IF_NAMESIZE, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "the interface name must be a string");
    return 0;
  }
  size_t full = 0;
  napi_get_value_string_utf8(env, v, NULL, 0, &full);
  if (len == 0 || full >= IF_NAMESIZE || strchr(dev, '/') || strchr(dev, ' ')) {
    throw_range(env, "the interface name must be 1 to 15 characters without '/' or spaces");
    return 0;
  }
  return 1;
}

static napi_value queue(napi_env env, route_job *j, const char *name) {
  napi_value promise, rname;
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok) goto fail;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &rname);
  if (napi_create_async_work(env, NULL, rname, execute, complete, j, &j->work) != napi_ok) goto fail;
  if (napi_queue_async_work(env, j->work) != napi_ok) goto fail;
  return promise;
fail:
  free(j->ops);
  free(j->results);
  free(j);
  napi_throw_error(env, NULL, "linen_route: cannot queue the work");
  return NULL;
}

// routeBatch(dev, ops: Uint32Array) → Promise<result[]>
static napi_value route_batch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return throw_range(env, "routeBatch(dev, ops) takes two arguments");
  char dev[IF_NAMESIZE];
  if (!read_dev(env, argv[0], dev)) return NULL;
  bool is_ta = false;
  napi_is_typedarray(env, argv[1], &is_ta);
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (!is_ta || napi_get_typedarray_info(env, argv[1], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint32_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "routeBatch: ops must be a Uint32Array");
    return NULL;
  }
  if (length % ROUTE_OP_WORDS) return throw_range(env, "routeBatch: ops must hold 4 words per route (kind, destination, prefix length, gateway)");
  size_t count = length / ROUTE_OP_WORDS;
  if (count > ROUTE_MAX_OPS) return throw_range(env, "routeBatch: at most 65536 routes per call");
  const uint32_t *ops = data;
  for (size_t i = 0; i < count; i++) {
    const uint32_t *op = &ops[i * ROUTE_OP_WORDS];
    char msg[128];
    if (op[0] < ROUTE_OP_REPLACE || op[0] > ROUTE_OP_GET) {
      snprintf(msg, sizeof msg, "routeBatch: route %zu: kind %u is not 1 (replace), 2 (delete) or 3 (get)", i, op[0]);
      return throw_range(env, msg);
    }
    if (op[2] > 32 || (op[0] == ROUTE_OP_GET && op[2] != 32)) {
      snprintf(msg, sizeof msg, "routeBatch: route %zu: prefix length %u (a lookup takes 32, a route 0 to 32)", i, op[2]);
      return throw_range(env, msg);
    }
    uint32_t host = op[2] == 32 ? 0 : 0xffffffffu >> op[2];
    if (op[0] != ROUTE_OP_GET && ((op[1] & host) || op[3] == 0)) {
      snprintf(msg, sizeof msg, "routeBatch: route %zu: host bits set in the destination, or no gateway", i);
      return throw_range(env, msg);
    }
  }
  route_job *j = calloc(1, sizeof *j);
  if (j) {
    j->ops = malloc((count ? count : 1) * ROUTE_OP_WORDS * sizeof(uint32_t));
    j->results = calloc(count ? count : 1, sizeof(route_result));
  }
  if (!j || !j->ops || !j->results) {
    if (j) { free(j->ops); free(j->results); free(j); }
    napi_throw_error(env, "ENOMEM", "routeBatch: out of memory");
    return NULL;
  }
  memcpy(j->ops, ops, count * ROUTE_OP_WORDS * sizeof(uint32_t));
  j->count = count;
  memcpy(j->dev, dev, sizeof j->dev);
  return queue(env, j, "linen.routeBatch");
}

// routeDump(dev) → Promise<Uint32Array> of (destination, prefix length, gateway) per route.
static napi_value route_dump(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) return throw_range(env, "routeDump(dev) takes the interface name");
  char dev[IF_NAMESIZE];
  if (!read_dev(env, argv[0], dev)) return NULL;
  route_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "routeDump: out of memory");
    return NULL;
  }
  j->dump = 1;
  memcpy(j->dev, dev, sizeof j->dev);
  return queue(env, j, "linen.routeDump");
}

void linen_route_register(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "routeBatch", NAPI_AUTO_LENGTH, route_batch, NULL, &fn);
  napi_set_named_property(env, exports, "routeBatch", fn);
  napi_create_function(env, "routeDump", NAPI_AUTO_LENGTH, route_dump, NULL, &fn);
  napi_set_named_property(env, exports, "routeDump", fn);
}
