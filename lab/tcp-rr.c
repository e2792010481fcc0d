// tcp-rr: one-connection TCP request/response, like netperf TCP_RR (netperf is not in Debian).
// A traffic tool of the benchmark only (lab/rr.ts compiles and runs it); never part of linen.
//
//   tcp-rr server <bind-ip> <port> <max-seconds>
//       accepts one connection and echoes every request back until the peer closes, or
//       max-seconds pass.
//   tcp-rr client <ip> <port> <seconds> <bytes>
//       sends a <bytes>-byte request, waits for the whole response, repeats for <seconds>;
//       prints one JSON line: transactions, seconds, per-transaction latency percentiles (us).
//
// TCP_NODELAY at both ends; every blocking call has a 2-second timeout, so a lost peer ends
// the run with an error instead of hanging.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_BYTES 65536
#define MAX_SAMPLES 4000000

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "tcp-rr: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void tune(int fd, int seconds) {
  int one = 1;
  struct timeval tv = { .tv_sec = seconds, .tv_usec = 0 };
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static struct sockaddr_in addr(const char *ip, const char *port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)atoi(port));
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
    fprintf(stderr, "tcp-rr: bad address %s\n", ip);
    exit(2);
  }
  return a;
}

/* Reads exactly n bytes; 0 when the peer closed first, -1 on error or timeout. */
static int read_all(int fd, char *buf, int n) {
  int got = 0;
  while (got < n) {
    ssize_t r = recv(fd, buf + got, (size_t)(n - got), 0);
    if (r == 0) return 0;
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    got += (int)r;
  }
  return 1;
}

static int write_all(int fd, const char *buf, int n) {
  int put = 0;
  while (put < n) {
    ssize_t w = send(fd, buf + put, (size_t)(n - put), MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    put += (int)w;
  }
  return 1;
}

static int server(const char *ip, const char *port, int max_seconds) {
  struct sockaddr_in a = addr(ip, port);
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  if (ls < 0) die("socket");
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(ls, 1) < 0) die("listen");
  struct timeval tv = { .tv_sec = max_seconds, .tv_usec = 0 };
  setsockopt(ls, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int fd = accept(ls, NULL, NULL);
  if (fd < 0) die("accept");
  close(ls);
  tune(fd, 2);
  static char buf[MAX_BYTES];
  double end = now() + max_seconds;
  for (;;) {
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r == 0) break;
    if (r < 0) {
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && now() < end) continue;
      die("recv");
    }
    if (write_all(fd, buf, (int)r) < 0) die("send");
    if (now() > end) break;
  }
  close(fd);
  return 0;
}

static int cmp(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

static double pct(float *s, long n, double p) {
  if (n == 0) return -1;
  long rank = (long)((p / 100.0) * n + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return s[rank - 1];
}

static int client(const char *ip, const char *port, double seconds, int bytes) {
  if (bytes < 1 || bytes > MAX_BYTES) {
    fprintf(stderr, "tcp-rr: bytes must be 1..%d\n", MAX_BYTES);
    return 2;
  }
  struct sockaddr_in a = addr(ip, port);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  tune(fd, 2);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
  static char req[MAX_BYTES], resp[MAX_BYTES];
  memset(req, 'r', (size_t)bytes);
  float *samples = malloc(sizeof(float) * MAX_SAMPLES);
  if (!samples) die("malloc");
  long n = 0;
  double t0 = now(), end = t0 + seconds, t = t0;
  while (t < end) {
    double s = t;
    if (write_all(fd, req, bytes) < 0) die("send");
    int r = read_all(fd, resp, bytes);
    if (r <= 0) {
      if (r == 0) errno = ECONNRESET;
      die("recv");
    }
    t = now();
    if (n < MAX_SAMPLES) samples[n] = (float)((t - s) * 1e6);
    n++;
  }
  double elapsed = t - t0;
  close(fd);
  long kept = n < MAX_SAMPLES ? n : MAX_SAMPLES;
  qsort(samples, (size_t)kept, sizeof(float), cmp);
  double sum = 0;
  for (long i = 0; i < kept; i++) sum += samples[i];
  printf("{\"transactions\":%ld,\"seconds\":%.6f,\"bytes\":%d,\"latencyUs\":{\"min\":%.3f,\"avg\":%.3f,\"p50\":%.3f,"
         "\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
         n, elapsed, bytes, kept ? samples[0] : -1.0, kept ? sum / kept : -1.0, pct(samples, kept, 50),
         pct(samples, kept, 90), pct(samples, kept, 99), kept ? samples[kept - 1] : -1.0);
  free(samples);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "server") == 0) return server(argv[2], argv[3], atoi(argv[4]));
  if (argc == 6 && strcmp(argv[1], "client") == 0) return client(argv[2], argv[3], atof(argv[4]), atoi(argv[5]));
  fprintf(stderr, "usage: tcp-rr server <bind-ip> <port> <max-seconds> | client <ip> <port> <seconds> <bytes>\n");
  return 2;
}
