/*
 * openloop: an open-loop, constant-rate HTTP/1.1 load generator in C, the fixed-rate phase's
 * generator (bench/lib/openloop.js builds it with cc and runs it). Same schedule, flags and JSON
 * as bench/load.js, which it replaces there: load.js (Node + undici, one process on the load
 * core) could not keep 2 x 5,000 sends/s paired; its sends ran late by tens of ms and even
 * nginx's added p99 read +70..287 ms (docs/performance.md, "The tail at 5,000 req/s").
 *
 *   openloop --port P [--port P2 ...] [--host upstream] [--path /] --rate R[,R2] --duration S
 *            [--warmup S] [--connections N] [--drain S]
 *
 * Slot j of a phase is intended at t0 + j / (K * rate) (K targets, slot j goes to target j % K:
 * every target gets the full rate, schedules interleaved, as load.js). A due slot goes out at
 * once on an idle keep-alive connection of its target, or waits in that target's FIFO for the
 * next one that frees (no pipelining). Latency = completion - intended time (coordinated
 * omission corrected, as wrk2); also completion - actual send (`serviceUs`), the send lag (when
 * this process handled a due slot - its intended time: the generator's own lateness, its health
 * figure) and `queuedUs` (actual send - intended: the lag plus waiting for a free connection).
 * With several targets, each but the last (the upstream direct) also gets `pairedAddedUs`: the
 * percentiles of its latency minus the direct slot's of the same pair (`paired`, below).
 * Percentiles are exact (every sample kept, sorted), not histogram buckets.
 *
 * Timing: one thread, epoll + a timerfd armed (absolute, CLOCK_MONOTONIC) at the next due time,
 * timer slack set to 1 ns, so a send goes out within a few µs of its time on an idle core;
 * never a busy loop (the load core also runs the upstream).
 * Every loop is bounded by the schedule's length and the --drain deadline.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAXT 8
#define MAXR 16
#define BUFSZ 65536

typedef struct {
  int fd, t, busy;
  int64_t slot;           /* -1: warm-up request, not a slot */
  int64_t intended, sent; /* ns */
  char buf[BUFSZ];
  size_t len;
} conn_t;

typedef struct {
  uint32_t lat, svc, lag; /* µs */
  uint32_t win;
  uint32_t pair; /* (slot - warm-up slots) / K: the slots of one pair are adjacent, one per target */
} sample_t;

typedef struct {
  int port;
  conn_t *conns;
  int64_t *q; /* FIFO of due slots waiting for a connection */
  size_t qh, qt, qcap;
  /* phase counters */
  sample_t *s;
  size_t ns, scap;
  long intended, completed, errors, non2xx, outstanding, reconnects;
  int64_t firstSend, lastSend;
  long sentRecorded;
  sample_t *lagS; /* generator lateness: when the loop handled a due slot - its intended time */
  size_t nl, lcap;
} target_t;

static int K, C;
static target_t T[MAXT];
static const char *host = "upstream", *path = "/";
static char req[512];
static size_t reqlen;
static int ep, tfd;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *m) {
  fprintf(stderr, "openloop: %s: %s\n", m, strerror(errno));
  exit(1);
}

static int dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static void watch(conn_t *c) {
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
}

static void reconnect(conn_t *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = dial(T[c->t].port);
  c->len = 0;
  c->busy = 0;
  T[c->t].reconnects++;
  watch(c);
}

/* Phase state, shared with the handlers. */
static int64_t warmEnd; /* slots before this are not recorded */
static double rateNow;
static long outstandingAll;

static void finish(conn_t *c, int ok, int status);
static void dispatch(conn_t *c, int64_t slot, int64_t intended);
static void serve(conn_t *c);
static int64_t t0, intervalNs;

static void send_on(conn_t *c, int64_t slot, int64_t intended) {
  target_t *t = &T[c->t];
  c->busy = 1;
  c->slot = slot;
  c->intended = intended;
  c->sent = now_ns();
  c->len = 0;
  if (slot >= warmEnd) {
    t->sentRecorded++;
    if (!t->firstSend) t->firstSend = c->sent;
    t->lastSend = c->sent;
  }
  ssize_t w = write(c->fd, req, reqlen);
  if (w != (ssize_t)reqlen) { /* 50 bytes into an empty socket buffer: a short write is a failure */
    finish(c, 0, 0);
    reconnect(c);
    serve(c);
  }
}

static void dispatch(conn_t *c, int64_t slot, int64_t intended) {
  (void)intended;
  target_t *t = &T[slot % K];
  t->outstanding++;
  outstandingAll++;
  if (slot >= warmEnd) t->intended++;
  if (!c)
    for (int i = 0; i < C; i++)
      if (!t->conns[i].busy) { c = &t->conns[i]; break; }
  if (c) { send_on(c, slot, intended); return; }
  if (t->qt - t->qh == t->qcap) {
    size_t n = t->qt - t->qh;
    int64_t *nq = malloc(sizeof(int64_t) * t->qcap * 2);
    for (size_t i = 0; i < n; i++) nq[i] = t->q[(t->qh + i) % t->qcap];
    free(t->q);
    t->q = nq;
    t->qh = 0;
    t->qt = n;
    t->qcap *= 2;
  }
  t->q[t->qt++ % t->qcap] = slot;
}

static void finish(conn_t *c, int ok, int status) {
  target_t *t = &T[c->t];
  int64_t end = now_ns();
  c->busy = 0;
  if (c->slot >= 0) {
    t->outstanding--;
    outstandingAll--;
    t->completed++;
    if (!ok) t->errors++;
    else {
      if (status < 200 || status > 299) t->non2xx++;
      if (c->slot >= warmEnd) {
        if (t->ns == t->scap) {
          t->scap = t->scap ? t->scap * 2 : 65536;
          t->s = realloc(t->s, sizeof(sample_t) * t->scap);
        }
        sample_t *s = &t->s[t->ns++];
        s->lat = (uint32_t)((end - c->intended) / 1000);
        s->svc = (uint32_t)((end - c->sent) / 1000);
        s->lag = (uint32_t)((c->sent - c->intended) / 1000); /* incl. waiting for a connection */
        s->pair = (uint32_t)((c->slot - warmEnd) / K);
        s->win = (uint32_t)((double)s->pair / rateNow);
      }
    }
  } else outstandingAll--;
}

/* A free connection takes the oldest waiting slot of its target. */
static void serve(conn_t *c) {
  target_t *t = &T[c->t];
  if (c->busy || t->qt == t->qh) return;
  int64_t slot = t->q[t->qh++ % t->qcap];
  t->outstanding--; /* dispatch counts it again */
  outstandingAll--;
  if (slot >= warmEnd) t->intended--;
  dispatch(c, slot, t0 + slot * intervalNs);
}

/* Parses a complete response in c->buf; returns 1 done (status set), 0 need more, -1 bad. */
static int parse(conn_t *c, int *status) {
  c->buf[c->len < BUFSZ ? c->len : BUFSZ - 1] = 0;
  char *he = memmem(c->buf, c->len, "\r\n\r\n", 4);
  if (!he) return c->len >= BUFSZ - 1 ? -1 : 0;
  if (c->len < 12 || strncmp(c->buf, "HTTP/1.", 7)) return -1;
  *status = atoi(c->buf + 9);
  size_t hl = (size_t)(he - c->buf) + 4;
  long cl = -1;
  int chunked = 0;
  for (char *l = strstr(c->buf, "\r\n") + 2; l < he; l = strstr(l, "\r\n") + 2) {
    if (!strncasecmp(l, "content-length:", 15)) cl = atol(l + 15);
    else if (!strncasecmp(l, "transfer-encoding:", 18) && strcasestr(l, "chunked") && strcasestr(l, "chunked") < strstr(l, "\r\n")) chunked = 1;
  }
  if (*status == 204 || *status == 304 || (*status >= 100 && *status < 200)) return 1;
  if (chunked) {
    size_t p = hl;
    for (;;) {
      char *e = memmem(c->buf + p, c->len - p, "\r\n", 2);
      if (!e) return 0;
      long n = strtol(c->buf + p, NULL, 16);
      p = (size_t)(e - c->buf) + 2;
      if (n == 0) return memmem(c->buf + p, c->len - p, "\r\n", 2) ? 1 : 0; /* no trailers expected */
      if (c->len < p + (size_t)n + 2) return 0;
      p += (size_t)n + 2;
    }
  }
  if (cl < 0) return -1; /* read-until-close bodies are not used here */
  return c->len >= hl + (size_t)cl ? 1 : 0;
}

static void on_read(conn_t *c) {
  for (;;) {
    ssize_t n = read(c->fd, c->buf + c->len, BUFSZ - 1 - c->len);
    if (n > 0) {
      c->len += (size_t)n;
      if (c->len < BUFSZ - 1) continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n == 0 || n < 0) { /* closed by the server */
      if (c->busy) finish(c, 0, 0);
      reconnect(c);
      serve(c);
      return;
    }
    break;
  }
  if (!c->busy) { c->len = 0; return; }
  int status = 0, r = parse(c, &status);
  if (r == 0) return;
  if (r < 0) {
    finish(c, 0, 0);
    reconnect(c);
    serve(c);
    return;
  }
  finish(c, 1, status);
  serve(c);
}

static void arm(int64_t at) {
  struct itimerspec its = {0};
  its.it_value.tv_sec = at / 1000000000LL;
  its.it_value.tv_nsec = at % 1000000000LL;
  if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
  timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Runs the loop until `until` (ns) or, if stopWhenIdle, until nothing is outstanding. */
static void loop(int64_t *next, int64_t total, int64_t until, int stopWhenIdle) {
  struct epoll_event evs[256];
  int64_t armed = -1;
  for (;;) {
    int64_t now = now_ns();
    while (*next < total && t0 + *next * intervalNs <= now) {
      int64_t j = *next;
      if (j >= warmEnd) {
        target_t *t = &T[j % K];
        if (t->nl == t->lcap) {
          t->lcap = t->lcap ? t->lcap * 2 : 65536;
          t->lagS = realloc(t->lagS, sizeof(sample_t) * t->lcap);
        }
        t->lagS[t->nl++].lag = (uint32_t)((now - (t0 + j * intervalNs)) / 1000);
      }
      dispatch(NULL, j, t0 + j * intervalNs);
      (*next)++;
    }
    if (*next >= total && stopWhenIdle && outstandingAll == 0) return;
    if (now >= until) return;
    int64_t due = *next < total ? t0 + *next * intervalNs : until;
    if (due > until) due = until;
    if (due != armed) { arm(due); armed = due; }
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) {
        uint64_t x;
        if (read(tfd, &x, sizeof x) < 0) { /* spurious: nothing to do */ }
        armed = -1;
      } else on_read(evs[i].data.ptr);
    }
  }
}

static int cmp32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* The index of the q-th percentile among n sorted samples (nearest rank). */
static size_t rank(size_t n, double q) {
  size_t k = (size_t)(q / 100.0 * (double)n + 0.5);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return k - 1;
}

static uint32_t pct(uint32_t *v, size_t n, double q) { return v[rank(n, q)]; }

static int cmpi64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static int64_t pcti(int64_t *v, size_t n, double q) { return v[rank(n, q)]; }

/*
 * The paired estimator of what target `t` adds over `base` (the last target: the upstream
 * direct): for each pair of adjacent slots (one per target, 1 / (K * rate) apart), this target's
 * latency minus the base's, then the percentiles of those differences. What both slots of a pair
 * meet (this process late, the load core busy, the machine stopping both cores) cancels out;
 * what only the proxy's path meets (its own pauses) stays whole. Pairs where either slot failed
 * or was not recorded are left out.
 */
static void paired(FILE *o, const target_t *t, const target_t *base) {
  fprintf(o, "\"pairedAddedUs\":");
  uint32_t np = 0;
  for (size_t i = 0; i < base->ns; i++) if (base->s[i].pair + 1 > np) np = base->s[i].pair + 1;
  if (!np || !t->ns) { fprintf(o, "null"); return; }
  uint32_t *bl = malloc(sizeof(uint32_t) * np);
  for (uint32_t m = 0; m < np; m++) bl[m] = UINT32_MAX;
  for (size_t i = 0; i < base->ns; i++) bl[base->s[i].pair] = base->s[i].lat;
  int64_t *d = malloc(sizeof(int64_t) * t->ns);
  size_t n = 0;
  for (size_t i = 0; i < t->ns; i++) {
    uint32_t m = t->s[i].pair;
    if (m < np && bl[m] != UINT32_MAX) d[n++] = (int64_t)t->s[i].lat - (int64_t)bl[m];
  }
  free(bl);
  if (!n) { free(d); fprintf(o, "null"); return; }
  qsort(d, n, sizeof(int64_t), cmpi64);
  fprintf(o, "{\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,\"p999\":%lld,\"max\":%lld,\"count\":%zu}", (long long)pcti(d, n, 50), (long long)pcti(d, n, 90),
          (long long)pcti(d, n, 99), (long long)pcti(d, n, 99.9), (long long)d[n - 1], n);
  free(d);
}

static void summary(FILE *o, const char *name, sample_t *s, size_t n, int field) {
  fprintf(o, "\"%s\":", name);
  if (!n) { fprintf(o, "null"); return; }
  uint32_t *v = malloc(sizeof(uint32_t) * n);
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    v[i] = field == 0 ? s[i].lat : field == 1 ? s[i].svc : s[i].lag;
    if (v[i] < 1) v[i] = 1; /* as load.js records: at least 1 µs */
    sum += v[i];
  }
  qsort(v, n, sizeof(uint32_t), cmp32);
  fprintf(o, "{\"p50\":%u,\"p90\":%u,\"p99\":%u,\"p999\":%u,\"max\":%u,\"mean\":%.0f,\"count\":%zu}", pct(v, n, 50), pct(v, n, 90), pct(v, n, 99), pct(v, n, 99.9), v[n - 1], sum / (double)n, n);
  free(v);
}

int main(int argc, char **argv) {
  double rates[MAXR];
  int nr = 0;
  double duration = 10, warmup = 1, drain = 10;
  C = 32;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) { fprintf(stderr, "openloop: %s needs a value\n", a); return 2; }
    i++;
    if (!strcmp(a, "--port")) { if (K == MAXT) return 2; T[K++].port = atoi(v); }
    else if (!strcmp(a, "--host")) host = v;
    else if (!strcmp(a, "--path")) path = v;
    else if (!strcmp(a, "--rate")) {
      for (char *p = (char *)v; *p && nr < MAXR;) {
        rates[nr++] = strtod(p, &p);
        if (*p == ',') p++;
        else break;
      }
    } else if (!strcmp(a, "--duration")) duration = atof(v);
    else if (!strcmp(a, "--warmup")) warmup = atof(v);
    else if (!strcmp(a, "--connections")) C = atoi(v);
    else if (!strcmp(a, "--drain")) drain = atof(v);
    else { fprintf(stderr, "openloop: unknown option %s\n", a); return 2; }
  }
  if (!K || !nr || duration <= 0 || warmup < 0 || C < 1 || drain <= 0) {
    fprintf(stderr, "usage: openloop --port P [--port P2] [--host H] [--path /] --rate R[,R2] --duration S [--warmup S] [--connections N] [--drain S]\n");
    return 2;
  }
  for (int i = 0; i < nr; i++) if (!(rates[i] > 0)) { fprintf(stderr, "openloop: --rate must be > 0\n"); return 2; }
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  reqlen = (size_t)snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host);
  ep = epoll_create1(0);
  tfd = timerfd_create(CLOCK_MONOTONIC, 0);
  if (ep < 0 || tfd < 0) die("epoll/timerfd");
  struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);
  for (int k = 0; k < K; k++) {
    T[k].conns = calloc((size_t)C, sizeof(conn_t));
    T[k].qcap = 1024;
    T[k].q = malloc(sizeof(int64_t) * T[k].qcap);
    for (int i = 0; i < C; i++) {
      conn_t *c = &T[k].conns[i];
      c->t = k;
      c->fd = dial(T[k].port);
      watch(c);
    }
  }
  /* One request on every connection first, so no connection is cold when measured. */
  warmEnd = INT64_MAX;
  for (int k = 0; k < K; k++)
    for (int i = 0; i < C; i++) {
      outstandingAll++;
      send_on(&T[k].conns[i], -1, now_ns());
    }
  {
    int64_t nx = 0;
    t0 = now_ns();
    intervalNs = 1;
    loop(&nx, 0, now_ns() + (int64_t)(drain * 1e9), 1);
  }
  printf("{\"host\":\"%s\",\"generator\":\"openloop\",\"phases\":[", host);
  for (int r = 0; r < nr; r++) {
    double rate = rates[r];
    rateNow = rate;
    intervalNs = (int64_t)(1e9 / (rate * K) + 0.5);
    int64_t total = (int64_t)(rate * (warmup + duration) + 0.5) * K;
    warmEnd = (int64_t)(rate * warmup + 0.5) * K;
    for (int k = 0; k < K; k++) {
      target_t *t = &T[k];
      t->ns = 0;
      t->nl = 0;
      t->intended = t->completed = t->errors = t->non2xx = t->outstanding = t->reconnects = t->sentRecorded = 0;
      t->firstSend = t->lastSend = 0;
      t->qh = t->qt = 0;
    }
    outstandingAll = 0;
    int64_t next = 0;
    t0 = now_ns() + 5000000;
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    loop(&next, total, t0 + (int64_t)((warmup + duration + drain) * 1e9), 1);
    clock_gettime(CLOCK_MONOTONIC, &w1);
    long unsentAll = 0;
    printf("%s{\"rate\":%g,\"durationS\":%g,\"warmupS\":%g,\"connections\":%d,\"elapsedS\":%.3f,\"targets\":[", r ? "," : "", rate, duration, warmup, C,
           (double)(w1.tv_sec - w0.tv_sec) + (double)(w1.tv_nsec - w0.tv_nsec) / 1e9);
    for (int k = 0; k < K; k++) {
      target_t *t = &T[k];
      long unsent = 0;
      for (int64_t j = next; j < total; j++) if (j % K == k) unsent++;
      unsentAll += unsent + t->outstanding;
      /* Recorded slots only: those intended after the warm-up. */
      long intendedRec = 0;
      for (int64_t j = warmEnd; j < total; j++) if (j % K == k) intendedRec++;
      printf("%s{\"url\":\"http://127.0.0.1:%d%s\",\"intended\":%ld,\"recorded\":%zu,\"completed\":%ld,\"errors\":%ld,\"errorKinds\":{},\"non2xx\":%ld,\"unfinished\":%ld,", k ? "," : "", t->port, path,
             intendedRec, t->ns, t->completed, t->errors, t->non2xx, t->outstanding + unsent);
      if (t->reconnects) printf("\"reconnects\":%ld,", t->reconnects);
      /* The rate this target was really sent at, over the recorded part of the schedule. */
      double span = (double)(t->lastSend - t->firstSend) / 1e9;
      printf("\"sentRate\":%.1f,", span > 0 && t->sentRecorded > 1 ? (double)(t->sentRecorded - 1) / span : 0.0);
      summary(stdout, "latencyUs", t->s, t->ns, 0);
      putchar(',');
      summary(stdout, "serviceUs", t->s, t->ns, 1);
      putchar(',');
      summary(stdout, "sendLagUs", t->lagS, t->nl, 2);
      putchar(',');
      summary(stdout, "queuedUs", t->s, t->ns, 2);
      if (K > 1 && k < K - 1) {
        putchar(',');
        paired(stdout, t, &T[K - 1]);
      }
      /* p99 per second of the recorded schedule (by intended time), as load.js. */
      printf(",\"windowsP99Us\":[");
      uint32_t nw = 0;
      for (size_t i = 0; i < t->ns; i++) if (t->s[i].win + 1 > nw) nw = t->s[i].win + 1;
      uint32_t *v = malloc(sizeof(uint32_t) * (t->ns + 1));
      for (uint32_t w = 0; w < nw; w++) {
        size_t n = 0;
        for (size_t i = 0; i < t->ns; i++) if (t->s[i].win == w) v[n++] = t->s[i].lat < 1 ? 1 : t->s[i].lat;
        if (!n) { printf("%snull", w ? "," : ""); continue; }
        qsort(v, n, sizeof(uint32_t), cmp32);
        printf("%s%u", w ? "," : "", pct(v, n, 99));
      }
      free(v);
      printf("]}");
    }
    printf("]}");
    if (unsentAll > 0) break; /* a later, higher rate would only queue behind this one */
  }
  printf("]}\n");
  return 0;
}
