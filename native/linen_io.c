// linen's I/O addon: file descriptors and memory regions, never packet formats.
//
// Every batched call works on a caller-given ArrayBuffer (the wasm instance's linear memory) and
// a table of descriptors inside it (docs/memory-abi.md). Offsets are checked against the buffer
// length before any syscall; failures become JS errors carrying .code (errno name) and .errno.
// Context-aware: the only state (which UDP sockets had GSO turned off) lives in per-env
// instance data, so the addon can be loaded in several worker_threads.
#define _GNU_SOURCE
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

// DESC_SIZE, D_*, TUNW_SIZE, TW_*, IOV_SIZE, IOV_*, VNET_HDR_LEN: the layout generated from the
// wasm core (scripts/gen-abi.mjs).
#include "linen_abi.h"
#include "linen_route.h"
#include "linen_wg.h"

#define MAX_IOV 1024      // UIO_MAXIOV: writev() refuses more
#define MAX_READ 1024     // descriptors per tunReadBatch/udpRecvBatch call (their offsets are kept)
#define MSG_CHUNK 64      // mmsghdrs per recvmmsg/sendmmsg call
#define MAX_WAIT_FDS 32   // wait() returns a 32-bit mask
#define SEND_WAIT_MS 5    // total POLLOUT wait per udpSendBatch call

// Per-env state: a bitmap of fds on which UDP GSO is known not to work.
typedef struct {
  uint8_t *nogso;
  size_t nogso_len;  // bytes
} env_state;

static void state_free(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  env_state *s = data;
  free(s->nogso);
  free(s);
}

static env_state *get_state(napi_env env) {
  void *p = NULL;
  napi_get_instance_data(env, &p);
  return p;
}

static int gso_off(env_state *s, int fd) {
  return fd >= 0 && (size_t)fd / 8 < s->nogso_len && (s->nogso[fd / 8] >> (fd % 8)) & 1;
}

static void set_gso_off(env_state *s, int fd, int off) {
  if (fd < 0) return;
  size_t need = (size_t)fd / 8 + 1;
  if (need > s->nogso_len) {
    if (!off) return;
    size_t len = need < 128 ? 128 : need * 2;
    uint8_t *p = realloc(s->nogso, len);
    if (!p) return;  // out of memory: we just keep trying GSO and falling back per send
    memset(p + s->nogso_len, 0, len - s->nogso_len);
    s->nogso = p;
    s->nogso_len = len;
  }
  if (off) s->nogso[fd / 8] |= (uint8_t)(1u << (fd % 8));
  else s->nogso[fd / 8] &= (uint8_t)~(1u << (fd % 8));
}

// ---- errors ----------------------------------------------------------------------------------

// Error("<call>: <strerror> (<ENAME>)") with .code = ENAME, .errno = err and .syscall = call.
napi_value linen_errno_error(napi_env env, const char *call, int err) {
  char msg[256], code[32];
  const char *name = strerrorname_np(err);
  if (name) snprintf(code, sizeof code, "%s", name);
  else snprintf(code, sizeof code, "E%d", err);
  snprintf(msg, sizeof msg, "%s: %s (%s)", call, strerror(err), code);
  napi_value jcode, jmsg, error, jerrno;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg);
  napi_create_error(env, jcode, jmsg, &error);
  napi_create_int32(env, err, &jerrno);
  napi_set_named_property(env, error, "errno", jerrno);
  napi_create_string_utf8(env, call, NAPI_AUTO_LENGTH, &jmsg);
  napi_set_named_property(env, error, "syscall", jmsg);
  return error;
}

static napi_value throw_errno(napi_env env, const char *call, int err) {
  napi_throw(env, linen_errno_error(env, call, err));
  return NULL;
}

static napi_value throw_range(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static napi_value throw_range(napi_env env, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

// ---- argument helpers (each returns 0 and leaves a pending exception on failure) -------------

#define ARGS(n)                                                                       \
  size_t argc = (n);                                                                  \
  napi_value argv[(n) > 0 ? (n) : 1];                                                 \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;   \
  if (argc < (n)) return throw_type(env, "expected " #n " arguments");

static int arg_i32(napi_env env, napi_value v, const char *what, int32_t *out) {
  double d;
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_number || napi_get_value_double(env, v, &d) != napi_ok || !(d >= -2147483648.0) ||
      d > 2147483647.0 || d != (double)(int32_t)d) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a 32-bit integer", what);
    throw_type(env, msg);
    return 0;
  }
  *out = (int32_t)d;
  return 1;
}

static int arg_u32(napi_env env, napi_value v, const char *what, uint32_t *out) {
  double d;
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_number || napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0) ||
      d > 4294967295.0 || d != (double)(uint32_t)d) {
    throw_range(env, "%s must be an integer in [0, 2^32)", what);
    return 0;
  }
  *out = (uint32_t)d;
  return 1;
}

// The memory: an ArrayBuffer (wasm Memory.buffer), or a TypedArray over one (the workaround for
// a SharedArrayBuffer on Node 20, whose napi_get_arraybuffer_info refuses one; see
// docs/kernel-interfaces.md, "The addon and wasm memory").
static int arg_mem(napi_env env, napi_value v, uint8_t **base, size_t *len) {
  bool is;
  void *data = NULL;
  if (napi_is_arraybuffer(env, v, &is) == napi_ok && is) {
    napi_get_arraybuffer_info(env, v, &data, len);
  } else if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type tt;
    size_t n, off;
    napi_get_typedarray_info(env, v, &tt, &n, &data, NULL, &off);
    static const uint8_t width[] = {1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8};
    *len = n * ((size_t)tt < sizeof width ? width[tt] : 1);
  } else {
    throw_type(env, "memory must be an ArrayBuffer (WebAssembly.Memory.buffer) or a view on one");
    return 0;
  }
  if (data == NULL && *len != 0) {
    throw_type(env, "memory is detached");
    return 0;
  }
  *base = data;
  if (*base == NULL) *len = 0;  // detached buffer: every access fails the bounds check
  return 1;
}

// fds: an Int32Array.
static int arg_fds(napi_env env, napi_value v, int32_t **fds, size_t *n) {
  bool is = false;
  napi_typedarray_type tt;
  void *data;
  napi_is_typedarray(env, v, &is);
  if (is) napi_get_typedarray_info(env, v, &tt, n, &data, NULL, NULL);
  if (!is || tt != napi_int32_array) {
    throw_type(env, "fds must be an Int32Array");
    return 0;
  }
  *fds = data;
  return 1;
}

// (fd, memory, a, b, c): the shape of tunReadBatch, tunWriteBatch and udpRecvBatch.
static int batch_args(napi_env env, napi_callback_info info, const char *const names[3], int32_t *fd,
                      uint8_t **base, size_t *len, uint32_t u[3]) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return 0;
  if (argc < 5) { throw_type(env, "expected 5 arguments"); return 0; }
  return arg_i32(env, argv[0], "fd", fd) && arg_mem(env, argv[1], base, len) &&
         arg_u32(env, argv[2], names[0], &u[0]) && arg_u32(env, argv[3], names[1], &u[1]) &&
         arg_u32(env, argv[4], names[2], &u[2]);
}

static int in_bounds(size_t len, uint64_t off, uint64_t n) { return off <= len && n <= len - off; }

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

// Checks that the table of n descriptors lies in memory and, when cap != UINT32_MAX, that each
// descriptor's [offset, offset + cap) does (cap == 0: use the descriptor's own length).
static int check_descs(napi_env env, const char *call, uint8_t *base, size_t len, uint32_t table,
                       uint32_t n, uint32_t cap) {
  if (!in_bounds(len, table, (uint64_t)n * DESC_SIZE)) {
    throw_range(env, "%s: descriptor table [%u, +%u x %u) outside memory of %zu bytes", call,
                table, n, DESC_SIZE, len);
    return 0;
  }
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *d = base + table + (size_t)i * DESC_SIZE;
    uint32_t off = rd32(d + D_OFFSET), l = cap ? cap : rd32(d + D_LENGTH);
    if (!in_bounds(len, off, l)) {
      throw_range(env, "%s: descriptor %u: [%u, +%u) outside memory of %zu bytes", call, i, off,
                  l, len);
      return 0;
    }
  }
  return 1;
}

static napi_value num(napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}

static napi_value boolean(napi_env env, bool v) {
  napi_value r;
  napi_get_boolean(env, v, &r);
  return r;
}

// Reads an optional property of an options object; returns 1 if it is present (not undefined).
static int opt(napi_env env, napi_value obj, const char *key, napi_value *out) {
  bool has = false;
  napi_valuetype t;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return 0;
  napi_get_named_property(env, obj, key, out);
  napi_typeof(env, *out, &t);
  return t != napi_undefined;
}

static int opt_bool(napi_env env, napi_value obj, const char *key) {
  napi_value v;
  bool b = false;
  if (opt(env, obj, key, &v)) napi_get_value_bool(env, v, &b);
  return b;
}

// ---- TUN ------------------------------------------------------------------------------------

static napi_value tun_open(napi_env env, napi_callback_info info) {
  ARGS(2);
  char name[IFNAMSIZ + 1];
  size_t nlen;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &nlen) != napi_ok)
    return throw_type(env, "tunOpen: name must be a string");
  if (nlen >= IFNAMSIZ) return throw_range(env, "tunOpen: name longer than %d bytes", IFNAMSIZ - 1);
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  int mq = 0, vnet = 0;
  if (t == napi_object) {
    mq = opt_bool(env, argv[1], "multiQueue");
    vnet = opt_bool(env, argv[1], "vnetHdr");
  }
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, "open /dev/net/tun", errno);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name, nlen);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (mq ? IFF_MULTI_QUEUE : 0) | (vnet ? IFF_VNET_HDR : 0);
  const char *step = "TUNSETIFF";
  int sz = VNET_HDR_LEN, fl;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) goto fail;
  step = "TUNSETVNETHDRSZ";
  if (vnet && ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) goto fail;
  step = "fcntl O_NONBLOCK";
  if ((fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) goto fail;
  napi_value r, v;
  napi_create_object(env, &r);
  napi_set_named_property(env, r, "fd", num(env, fd));
  ifr.ifr_name[IFNAMSIZ - 1] = 0;
  napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, r, "name", v);
  return r;
fail: {
  int err = errno;
  close(fd);
  return throw_errno(env, step, err);
}
}

static napi_value tun_set_offload(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  uint32_t flags;
  if (!arg_i32(env, argv[0], "fd", &fd) || !arg_u32(env, argv[1], "flags", &flags)) return NULL;
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0)
    return throw_errno(env, "TUNSETOFFLOAD", errno);
  return NULL;
}

// The arguments shared by the two batched reads: (fd, memory, descTable, max, capacity), with
// every descriptor's [offset, +capacity) checked to lie in memory. The checked offsets are kept
// in off[] and the reads use those: the kernel writes packet bytes into the same memory, and a
// buffer that overlaps the table (a caller error) must not steer a later read elsewhere.
typedef struct {
  int32_t fd;
  uint8_t *base;
  uint32_t table, max, cap;
  uint32_t off[MAX_READ];
} read_batch;

static int read_batch_args(napi_env env, napi_callback_info info, const char *call, read_batch *b) {
  static const char *const names[3] = {"descTable", "max", "capacity"};
  uint32_t u[3];
  size_t len;
  if (!batch_args(env, info, names, &b->fd, &b->base, &len, u)) return 0;
  b->table = u[0];
  b->max = u[1];
  b->cap = u[2];
  if (b->cap == 0) {
    throw_range(env, "%s: capacity must be > 0", call);
    return 0;
  }
  if (b->max > MAX_READ) {
    throw_range(env, "%s: max %u is over %d", call, b->max, MAX_READ);
    return 0;
  }
  if (!check_descs(env, call, b->base, len, b->table, b->max, b->cap)) return 0;
  for (uint32_t i = 0; i < b->max; i++)
    b->off[i] = rd32(b->base + b->table + (size_t)i * DESC_SIZE + D_OFFSET);
  return 1;
}

// tunReadBatch(fd, memory, descTable, max, capacity[, budget]) -> count
// With a budget (bytes, > 0), stops once the packets read add up to it: a caller that processes
// a whole batch before sending any of it bounds how long the first packet waits.
static napi_value tun_read_batch(napi_env env, napi_callback_info info) {
  read_batch b;
  if (!read_batch_args(env, info, "tunReadBatch", &b)) return NULL;
  size_t argc = 6;
  napi_value argv[6];
  uint32_t budget = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  napi_valuetype t6 = napi_undefined;
  if (argc >= 6) napi_typeof(env, argv[5], &t6);
  if (t6 != napi_undefined && !arg_u32(env, argv[5], "budget", &budget)) return NULL;
  uint64_t bytes = 0;
  uint32_t n = 0;
  while (n < b.max && (budget == 0 || bytes < budget)) {
    uint8_t *d = b.base + b.table + (size_t)n * DESC_SIZE;
    ssize_t r = read(b.fd, b.base + b.off[n], b.cap);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK || n > 0) break;
      return throw_errno(env, "tunReadBatch read", errno);
    }
    if (r == 0) break;
    wr32(d + D_LENGTH, (uint32_t)r < b.cap ? (uint32_t)r : b.cap);
    bytes += (uint64_t)r;
    n++;
  }
  return num(env, n);
}

// tunWriteBatch(fd, memory, writesTable, count, iovTable) -> written
static napi_value tun_write_batch(napi_env env, napi_callback_info info) {
  static const char *const names[3] = {"writesTable", "count", "iovTable"};
  int32_t fd;
  uint32_t u[3];
  uint8_t *base;
  size_t len;
  if (!batch_args(env, info, names, &fd, &base, &len, u)) return NULL;
  uint32_t wtab = u[0], count = u[1], iovtab = u[2];
  if (!in_bounds(len, wtab, (uint64_t)count * TUNW_SIZE))
    return throw_range(env, "tunWriteBatch: writes table [%u, +%u x %u) outside memory of %zu bytes",
                       wtab, count, TUNW_SIZE, len);
  // Validate everything before writing anything.
  for (uint32_t i = 0; i < count; i++) {
    const uint8_t *w = base + wtab + (size_t)i * TUNW_SIZE;
    uint32_t first = rd32(w + TW_FIRST), n = rd32(w + TW_COUNT);
    if (n > MAX_IOV) return throw_range(env, "tunWriteBatch: write %u: %u iovecs (max %d)", i, n, MAX_IOV);
    if (!in_bounds(len, (uint64_t)iovtab + (uint64_t)first * IOV_SIZE, (uint64_t)n * IOV_SIZE))
      return throw_range(env, "tunWriteBatch: write %u: iovecs [%u, +%u) outside memory", i, first, n);
    for (uint32_t k = 0; k < n; k++) {
      const uint8_t *v = base + iovtab + ((size_t)first + k) * IOV_SIZE;
      if (!in_bounds(len, rd32(v + IOV_OFFSET), rd32(v + IOV_LENGTH)))
        return throw_range(env, "tunWriteBatch: write %u: iovec %u [%u, +%u) outside memory of %zu bytes",
                           i, first + k, rd32(v + IOV_OFFSET), rd32(v + IOV_LENGTH), len);
    }
  }
  struct iovec iov[MAX_IOV];
  uint32_t written = 0;
  for (uint32_t i = 0; i < count; i++) {
    const uint8_t *w = base + wtab + (size_t)i * TUNW_SIZE;
    uint32_t first = rd32(w + TW_FIRST), n = rd32(w + TW_COUNT);
    for (uint32_t k = 0; k < n; k++) {
      const uint8_t *v = base + iovtab + ((size_t)first + k) * IOV_SIZE;
      iov[k].iov_base = base + rd32(v + IOV_OFFSET);
      iov[k].iov_len = rd32(v + IOV_LENGTH);
    }
    ssize_t r;
    do r = writev(fd, iov, (int)n); while (r < 0 && errno == EINTR);
    if (r >= 0) { written++; continue; }
    if (errno == EINVAL) continue;  // malformed packet: dropped, not counted
    if (errno == EIO) break;        // interface down: not an error
    int err = errno;
    throw_errno(env, "tunWriteBatch writev", err);
    // Tell the caller how far we got.
    napi_value exc;
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) {
      napi_set_named_property(env, exc, "written", num(env, written));
      napi_throw(env, exc);
    }
    return NULL;
  }
  return num(env, written);
}

// ---- UDP ------------------------------------------------------------------------------------

static int sockopt_int(int fd, int level, int name, int v) {
  return setsockopt(fd, level, name, &v, sizeof v);
}

static int getsockopt_int(int fd, int level, int name, int *v) {
  socklen_t l = sizeof *v;
  return getsockopt(fd, level, name, v, &l);
}

// udpOpen({address, port, reusePort?, rcvbuf?, sndbuf?, gro?, pmtuDisc?}) -> {fd, port, gso, gro, rcvbuf, sndbuf}
static napi_value udp_open(napi_env env, napi_callback_info info) {
  ARGS(1);
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (t != napi_object) return throw_type(env, "udpOpen: options must be an object");
  napi_value v;
  char addr[64] = "0.0.0.0", pmtu[16] = "";
  uint32_t port = 0, rcvbuf = 0, sndbuf = 0;
  size_t l;
  if (opt(env, argv[0], "address", &v) &&
      napi_get_value_string_utf8(env, v, addr, sizeof addr, &l) != napi_ok)
    return throw_type(env, "udpOpen: address must be a string");
  if (opt(env, argv[0], "port", &v) && (!arg_u32(env, v, "udpOpen: port", &port))) return NULL;
  if (port > 65535) return throw_range(env, "udpOpen: port %u out of range", port);
  if (opt(env, argv[0], "rcvbuf", &v) && !arg_u32(env, v, "udpOpen: rcvbuf", &rcvbuf)) return NULL;
  if (opt(env, argv[0], "sndbuf", &v) && !arg_u32(env, v, "udpOpen: sndbuf", &sndbuf)) return NULL;
  if (opt(env, argv[0], "pmtuDisc", &v) &&
      napi_get_value_string_utf8(env, v, pmtu, sizeof pmtu, &l) != napi_ok)
    return throw_type(env, "udpOpen: pmtuDisc must be 'dont', 'want' or 'do'");
  int pmtu_val = -1;
  if (pmtu[0]) {
    if (!strcmp(pmtu, "dont")) pmtu_val = IP_PMTUDISC_DONT;
    else if (!strcmp(pmtu, "want")) pmtu_val = IP_PMTUDISC_WANT;
    else if (!strcmp(pmtu, "do")) pmtu_val = IP_PMTUDISC_DO;
    else return throw_type(env, "udpOpen: pmtuDisc must be 'dont', 'want' or 'do'");
  }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
    return throw_type(env, "udpOpen: address must be a dotted-quad IPv4 address");

  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "udpOpen socket", errno);
  const char *step = "udpOpen SO_REUSEPORT";
  if (opt_bool(env, argv[0], "reusePort") && sockopt_int(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0) goto fail;
  // Buffers: the plain option is capped at [rw]mem_max; the FORCE variant (CAP_NET_ADMIN) is not.
  // Failures are ignored: the result reports what we got.
  if (rcvbuf) {
    sockopt_int(fd, SOL_SOCKET, SO_RCVBUF, (int)rcvbuf);
    sockopt_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, (int)rcvbuf);
  }
  if (sndbuf) {
    sockopt_int(fd, SOL_SOCKET, SO_SNDBUF, (int)sndbuf);
    sockopt_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, (int)sndbuf);
  }
  step = "udpOpen IP_MTU_DISCOVER";
  if (pmtu_val >= 0 && sockopt_int(fd, IPPROTO_IP, IP_MTU_DISCOVER, pmtu_val) < 0) goto fail;
  step = "udpOpen bind";
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) goto fail;
  socklen_t sl = sizeof sa;
  step = "udpOpen getsockname";
  if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) goto fail;
  int x = 0;
  bool gso = getsockopt_int(fd, IPPROTO_UDP, UDP_SEGMENT, &x) == 0;
  bool gro = false;
  if (opt_bool(env, argv[0], "gro") && sockopt_int(fd, IPPROTO_UDP, UDP_GRO, 1) == 0) {
    x = 0;
    gro = getsockopt_int(fd, IPPROTO_UDP, UDP_GRO, &x) == 0 && x == 1;
  }
  set_gso_off(get_state(env), fd, !gso);
  int rb = 0, sb = 0;
  getsockopt_int(fd, SOL_SOCKET, SO_RCVBUF, &rb);
  getsockopt_int(fd, SOL_SOCKET, SO_SNDBUF, &sb);
  napi_value r;
  napi_create_object(env, &r);
  napi_set_named_property(env, r, "fd", num(env, fd));
  napi_set_named_property(env, r, "port", num(env, ntohs(sa.sin_port)));
  napi_set_named_property(env, r, "gso", boolean(env, gso));
  napi_set_named_property(env, r, "gro", boolean(env, gro));
  napi_set_named_property(env, r, "rcvbuf", num(env, rb));
  napi_set_named_property(env, r, "sndbuf", num(env, sb));
  return r;
fail: {
  int err = errno;
  close(fd);
  return throw_errno(env, step, err);
}
}

// udpRecvBatch(fd, memory, descTable, max, capacity) -> count
static napi_value udp_recv_batch(napi_env env, napi_callback_info info) {
  read_batch b;
  if (!read_batch_args(env, info, "udpRecvBatch", &b)) return NULL;
  struct mmsghdr msgs[MSG_CHUNK];
  struct iovec iov[MSG_CHUNK];
  struct sockaddr_in sa[MSG_CHUNK];
  union { struct cmsghdr align; char buf[64]; } ctl[MSG_CHUNK];
  uint32_t total = 0;
  while (total < b.max) {
    uint32_t n = b.max - total < MSG_CHUNK ? b.max - total : MSG_CHUNK;
    for (uint32_t i = 0; i < n; i++) {
      iov[i].iov_base = b.base + b.off[total + i];
      iov[i].iov_len = b.cap;
      memset(&msgs[i], 0, sizeof msgs[i]);
      msgs[i].msg_hdr.msg_name = &sa[i];
      msgs[i].msg_hdr.msg_namelen = sizeof sa[i];
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = ctl[i].buf;
      msgs[i].msg_hdr.msg_controllen = sizeof ctl[i].buf;
    }
    int r = recvmmsg(b.fd, msgs, n, MSG_DONTWAIT, NULL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK || total > 0) break;
      return throw_errno(env, "udpRecvBatch recvmmsg", errno);
    }
    for (int i = 0; i < r; i++) {
      uint8_t *d = b.base + b.table + (size_t)(total + i) * DESC_SIZE;
      struct msghdr *h = &msgs[i].msg_hdr;
      uint32_t got = msgs[i].msg_len;
      if (got > b.cap) got = b.cap;  // truncated (MSG_TRUNC): report what is stored
      wr32(d + D_LENGTH, got);
      if (h->msg_namelen >= sizeof(struct sockaddr_in) && sa[i].sin_family == AF_INET) {
        memcpy(d + D_ADDR, &sa[i].sin_addr, 4);
        memcpy(d + D_PORT, &sa[i].sin_port, 2);
      } else {
        memset(d + D_ADDR, 0, 6);
      }
      uint16_t seg = 0;
      for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO &&
            c->cmsg_len >= CMSG_LEN(sizeof(int))) {
          int g;
          memcpy(&g, CMSG_DATA(c), sizeof g);
          seg = (uint16_t)g;
        }
      }
      wr16(d + D_SEGSIZE, seg);
      wr16(d + D_STATUS, 0);
    }
    total += (uint32_t)r;
    if ((uint32_t)r < n) break;  // queue drained
  }
  return num(env, total);
}

// One outgoing message being built by udpSendBatch.
typedef struct {
  struct mmsghdr m[MSG_CHUNK];
  struct iovec iov[MSG_CHUNK];
  struct sockaddr_in sa[MSG_CHUNK];
  union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(uint16_t))]; } ctl[MSG_CHUNK];
  uint32_t desc[MSG_CHUNK];  // descriptor index of each message
  uint32_t end[MSG_CHUNK];   // byte offset in that descriptor's data where the message ends
  uint8_t gso[MSG_CHUNK];
} send_buf;

static int pick_fd(const uint8_t *d, const int32_t *fds, size_t nfds) {
  // The flow's hash only picks the socket: one flow keeps one source port, flows spread.
  uint16_t flow = rd16(d + D_FLOW_HASH);
  return flow ? fds[flow % nfds] : fds[0];
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// udpSendBatch(fds, memory, descTable, count) -> number of descriptors sent
static napi_value udp_send_batch(napi_env env, napi_callback_info info) {
  ARGS(4);
  int32_t *fds;
  size_t nfds;
  uint32_t table, count;
  uint8_t *base;
  size_t len;
  if (!arg_fds(env, argv[0], &fds, &nfds) || !arg_mem(env, argv[1], &base, &len) ||
      !arg_u32(env, argv[2], "descTable", &table) || !arg_u32(env, argv[3], "count", &count))
    return NULL;
  if (nfds == 0) return throw_range(env, "udpSendBatch: fds is empty");
  if (!check_descs(env, "udpSendBatch", base, len, table, count, 0)) return NULL;
  env_state *st = get_state(env);
  for (uint32_t i = 0; i < count; i++) wr16(base + table + (size_t)i * DESC_SIZE + D_STATUS, 0);

  send_buf sb, *b = &sb;
  int64_t deadline = -1;  // set at the first EAGAIN
  uint32_t di = 0, pos = 0;  // cursor: descriptor, byte offset inside it
  while (di < count) {
    // Build up to MSG_CHUNK messages from the cursor, all for the same socket.
    const uint8_t *d0 = base + table + (size_t)di * DESC_SIZE;
    int fd = pick_fd(d0, fds, nfds);
    int nogso = gso_off(st, fd);
    uint32_t n = 0, cd = di, cp = pos;
    while (n < MSG_CHUNK && cd < count) {
      const uint8_t *d = base + table + (size_t)cd * DESC_SIZE;
      if (pick_fd(d, fds, nfds) != fd) break;
      uint32_t off = rd32(d + D_OFFSET), dl = rd32(d + D_LENGTH), seg = rd16(d + D_SEGSIZE);
      int use_gso = seg && dl > seg && !nogso;
      uint32_t take = dl - cp;
      if (seg && dl > seg && nogso && take > seg) take = seg;  // software split: one datagram
      struct msghdr *h = &b->m[n].msg_hdr;
      memset(&b->m[n], 0, sizeof b->m[n]);
      b->iov[n].iov_base = base + off + cp;
      b->iov[n].iov_len = take;
      memset(&b->sa[n], 0, sizeof b->sa[n]);
      b->sa[n].sin_family = AF_INET;
      memcpy(&b->sa[n].sin_addr, d + D_ADDR, 4);
      memcpy(&b->sa[n].sin_port, d + D_PORT, 2);
      h->msg_name = &b->sa[n];
      h->msg_namelen = sizeof b->sa[n];
      h->msg_iov = &b->iov[n];
      h->msg_iovlen = 1;
      if (use_gso) {
        memset(b->ctl[n].buf, 0, sizeof b->ctl[n].buf);
        h->msg_control = b->ctl[n].buf;
        h->msg_controllen = sizeof b->ctl[n].buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(h);
        c->cmsg_level = IPPROTO_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t s16 = (uint16_t)seg;
        memcpy(CMSG_DATA(c), &s16, sizeof s16);
      }
      b->desc[n] = cd;
      b->end[n] = cp + take;
      b->gso[n] = (uint8_t)use_gso;
      n++;
      cp += take;
      if (cp >= dl) { cd++; cp = 0; }
    }
    int r = sendmmsg(fd, b->m, n, MSG_DONTWAIT);
    if (r > 0) {
      uint32_t last = (uint32_t)r - 1;
      const uint8_t *dl = base + table + (size_t)b->desc[last] * DESC_SIZE;
      if (b->end[last] >= rd32(dl + D_LENGTH)) { di = b->desc[last] + 1; pos = 0; }
      else { di = b->desc[last]; pos = b->end[last]; }
      continue;
    }
    int err = r < 0 ? errno : EAGAIN;
    if (err == EINTR) continue;
    if (err == EBADF || err == ENOTSOCK || err == EFAULT || err == EDESTADDRREQ)
      return throw_errno(env, "udpSendBatch sendmmsg", err);  // the socket, not the message
    if (err == EAGAIN || err == EWOULDBLOCK) {
      int64_t now = now_ms();
      if (deadline < 0) deadline = now + SEND_WAIT_MS;
      if (now < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, (int)(deadline - now));
        continue;
      }
      // Still blocked: everything left for this socket in this run fails.
      uint32_t k = di;
      for (; k < count && pick_fd(base + table + (size_t)k * DESC_SIZE, fds, nfds) == fd; k++)
        wr16(base + table + (size_t)k * DESC_SIZE + D_STATUS, (uint16_t)EAGAIN);
      di = k;
      pos = 0;
      continue;
    }
    if (err == EIO && b->gso[0]) {
      // No checksum offload on the egress device (kernels < 6.11): GSO off for this socket;
      // the same cursor is rebuilt as separate datagrams.
      set_gso_off(st, fd, 1);
      if (gso_off(st, fd)) continue;
    }
    // Per-message error: mark this descriptor and move on to the next one.
    wr16(base + table + (size_t)b->desc[0] * DESC_SIZE + D_STATUS, (uint16_t)err);
    di = b->desc[0] + 1;
    pos = 0;
  }
  uint32_t ok = 0;
  for (uint32_t i = 0; i < count; i++)
    if (rd16(base + table + (size_t)i * DESC_SIZE + D_STATUS) == 0) ok++;
  return num(env, ok);
}

static napi_value udp_gso_enabled(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (!arg_i32(env, argv[0], "fd", &fd)) return NULL;
  return boolean(env, !gso_off(get_state(env), fd));
}

// udpSetGso(fd, enabled): turn UDP GSO off (descriptors with segSize are then sent as separate
// datagrams) or back on; e.g. to work around kernels with broken GSO.
static napi_value udp_set_gso(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  bool on = false;
  if (!arg_i32(env, argv[0], "fd", &fd)) return NULL;
  if (napi_get_value_bool(env, argv[1], &on) != napi_ok)
    return throw_type(env, "udpSetGso: enabled must be a boolean");
  set_gso_off(get_state(env), fd, !on);
  if (!on && !gso_off(get_state(env), fd)) return throw_errno(env, "udpSetGso", ENOMEM);
  return NULL;
}

// ---- eventfd, wait, close ---------------------------------------------------------------------

static napi_value eventfd_open(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return throw_errno(env, "eventfd", errno);
  return num(env, fd);
}

static napi_value eventfd_signal(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (!arg_i32(env, argv[0], "fd", &fd)) return NULL;
  uint64_t one = 1;
  ssize_t r;
  do r = write(fd, &one, sizeof one); while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EAGAIN) return throw_errno(env, "eventfdSignal write", errno);
  return NULL;
}

// Returns the count accumulated since the last drain (0 if none).
static napi_value eventfd_drain(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (!arg_i32(env, argv[0], "fd", &fd)) return NULL;
  uint64_t v = 0;
  ssize_t r;
  do r = read(fd, &v, sizeof v); while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EAGAIN) return throw_errno(env, "eventfdDrain read", errno);
  return num(env, r < 0 ? 0 : (double)v);
}

// wait(fds, timeoutMs) -> bitmask of readable indexes; 0 on timeout or EINTR.
static napi_value wait_fds(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t *fds, timeout;
  size_t n;
  if (!arg_fds(env, argv[0], &fds, &n) || !arg_i32(env, argv[1], "timeoutMs", &timeout)) return NULL;
  if (n > MAX_WAIT_FDS) return throw_range(env, "wait: at most %d fds", MAX_WAIT_FDS);
  struct pollfd p[MAX_WAIT_FDS];
  for (size_t i = 0; i < n; i++) p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  int r = poll(p, n, timeout < 0 ? -1 : timeout);
  if (r < 0) {
    if (errno == EINTR) return num(env, 0);
    return throw_errno(env, "wait poll", errno);
  }
  uint32_t mask = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i].revents & POLLNVAL) return throw_errno(env, "wait poll", EBADF);
    if (p[i].revents & (POLLIN | POLLERR | POLLHUP)) mask |= 1u << i;
  }
  return num(env, mask);
}

static napi_value close_fd(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (!arg_i32(env, argv[0], "fd", &fd)) return NULL;
  set_gso_off(get_state(env), fd, 0);
  if (close(fd) < 0 && errno != EINTR) return throw_errno(env, "close", errno);
  return NULL;
}

// setBlocking(fd, blocking): clears or sets O_NONBLOCK (the per-packet baseline engine reads
// the TUN with blocking reads on libuv's thread pool).
static napi_value set_blocking(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  bool blocking = false;
  if (!arg_i32(env, argv[0], "fd", &fd)) return NULL;
  if (napi_get_value_bool(env, argv[1], &blocking) != napi_ok)
    return throw_type(env, "setBlocking: blocking must be a boolean");
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, blocking ? (fl & ~O_NONBLOCK) : (fl | O_NONBLOCK)) < 0)
    return throw_errno(env, "setBlocking fcntl", errno);
  return NULL;
}

// ---- systemd ----------------------------------------------------------------------------------

// sdNotify(socketPath, message): one datagram to the service manager's NOTIFY_SOCKET, as
// sd_notify(3) sends it. A leading '@' names a socket in the abstract namespace. Node has no
// Unix datagram sockets, hence this call.
static napi_value sd_notify(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  size_t plen;
  if (napi_get_value_string_utf8(env, argv[0], sa.sun_path, sizeof sa.sun_path, &plen) != napi_ok)
    return throw_type(env, "sdNotify: socketPath must be a string");
  if (plen == 0 || plen >= sizeof sa.sun_path - 1)
    return throw_range(env, "sdNotify: socketPath must be 1 to %d bytes", (int)sizeof sa.sun_path - 2);
  if (sa.sun_path[0] == '@') sa.sun_path[0] = 0;
  char msg[1024];
  size_t mlen;
  if (napi_get_value_string_utf8(env, argv[1], msg, sizeof msg, &mlen) != napi_ok)
    return throw_type(env, "sdNotify: message must be a string");
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "sdNotify socket", errno);
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
  ssize_t r = sendto(fd, msg, mlen, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
  int err = errno;
  close(fd);
  if (r < 0) return throw_errno(env, "sdNotify sendto", err);
  return NULL;
}

static napi_value abi_version(napi_env env, napi_callback_info info) {
  (void)info;
  return num(env, 3);
}

// ---- module -----------------------------------------------------------------------------------

static napi_value init(napi_env env, napi_value exports) {
  env_state *s = calloc(1, sizeof *s);
  if (!s || napi_set_instance_data(env, s, state_free, NULL) != napi_ok) {
    free(s);
    napi_throw_error(env, NULL, "linen_io: cannot allocate instance data");
    return NULL;
  }
  static const struct { const char *name; napi_callback fn; } fns[] = {
    {"abiVersion", abi_version},       {"tunOpen", tun_open},
    {"tunSetOffload", tun_set_offload}, {"tunReadBatch", tun_read_batch},
    {"tunWriteBatch", tun_write_batch}, {"udpOpen", udp_open},
    {"udpRecvBatch", udp_recv_batch},   {"udpSendBatch", udp_send_batch},
    {"udpGsoEnabled", udp_gso_enabled}, {"udpSetGso", udp_set_gso},
    {"eventfdOpen", eventfd_open},
    {"eventfdSignal", eventfd_signal},  {"eventfdDrain", eventfd_drain},
    {"wait", wait_fds},                 {"close", close_fd},
    {"setBlocking", set_blocking},     {"sdNotify", sd_notify},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &fn);
    napi_set_named_property(env, exports, fns[i].name, fn);
  }
  static const struct { const char *name; uint32_t v; } consts[] = {
    {"TUN_F_CSUM", TUN_F_CSUM}, {"TUN_F_TSO4", TUN_F_TSO4}, {"TUN_F_TSO6", TUN_F_TSO6},
    {"TUN_F_TSO_ECN", TUN_F_TSO_ECN}, {"TUN_F_UFO", TUN_F_UFO}, {"TUN_F_USO4", TUN_F_USO4},
    {"TUN_F_USO6", TUN_F_USO6}, {"MAX_IOV", MAX_IOV},
    {"MAX_WAIT_FDS", MAX_WAIT_FDS},
  };
  napi_value c;
  napi_create_object(env, &c);
  for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++)
    napi_set_named_property(env, c, consts[i].name, num(env, consts[i].v));
  napi_object_freeze(env, c);
  napi_set_named_property(env, exports, "constants", c);
  // The layout this addon was compiled with: the shell compares it with the wasm core's exports
  // and refuses to start when a field differs.
  static const struct { const char *name; uint32_t v; } abi[] = {
#define ABI_ENTRY(n) {#n, n},
    LINEN_ABI_FIELDS(ABI_ENTRY)
#undef ABI_ENTRY
  };
  napi_value l;
  napi_create_object(env, &l);
  for (size_t i = 0; i < sizeof abi / sizeof abi[0]; i++)
    napi_set_named_property(env, l, abi[i].name, num(env, abi[i].v));
  napi_object_freeze(env, l);
  napi_set_named_property(env, exports, "layout", l);
  linen_route_register(env, exports);
  linen_wg_register(env, exports);
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
