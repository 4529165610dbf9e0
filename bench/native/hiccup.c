/*
 * hiccup: the platform's own pauses, per core, for bench/tail.js (the idea of jHiccup: measure
 * what the machine does to a thread that does nothing, and read every proxy's tail against it).
 *
 *   hiccup --cpu 0 [--cpu 1 ...] [--period-us 1000] [--report-ms 5]
 *
 * (bench/lib/hiccup.js runs it with --period-us 2000.)
 *
 * One thread per --cpu, pinned there, at SCHED_FIFO priority 50 when the process may (root):
 * it sleeps --period-us (absolute CLOCK_MONOTONIC deadlines, timer slack 1 ns) and, each time it
 * wakes, measures how late it woke. A real-time thread that has slept preempts every ordinary
 * thread of the guest at once, so no process of the bench can make it late by more than a few
 * µs; a wake-up late by milliseconds means the core itself did not run: the hypervisor
 * descheduled the virtual CPU (another VM, a host CPU quota), or the kernel ran with interrupts
 * off. Each lateness >= --report-ms is one line on stdout, flushed at once:
 *
 *   {"cpu":1,"atNs":<CLOCK_MONOTONIC ns when it woke>,"lateUs":99950,"rt":1}
 *
 * (`rt`: 0 when SCHED_FIFO was refused and the thread runs as an ordinary one; its figures then
 * include the guest's own scheduling.) CLOCK_MONOTONIC is Node's process.hrtime clock, so a
 * reader can place each pause in its own phases. Runs until stdin closes or SIGTERM; the sleep
 * is its only loop. Built with cc by bench/lib/native.js, as openloop is.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define MAXCPU 64

static int64_t period_ns = 1000000, report_ns = 5000000;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *watch(void *arg) {
  long cpu = (long)arg;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET((int)cpu, &set);
  if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
    fprintf(stderr, "hiccup: cannot pin to cpu %ld\n", cpu);
    exit(2);
  }
  struct sched_param sp = { .sched_priority = 50 };
  int rt = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  int64_t due = now_ns() + period_ns;
  for (;;) {
    struct timespec ts = { .tv_sec = due / 1000000000, .tv_nsec = due % 1000000000 };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
    }
    int64_t woke = now_ns();
    int64_t late = woke - due;
    if (late >= report_ns) {
      pthread_mutex_lock(&out_lock);
      printf("{\"cpu\":%ld,\"atNs\":%lld,\"lateUs\":%lld,\"rt\":%d}\n", cpu, (long long)woke, (long long)(late / 1000), rt);
      fflush(stdout);
      pthread_mutex_unlock(&out_lock);
    }
    /* The next deadline from now: one pause is one report, not a burst of missed periods. */
    due = woke + period_ns;
  }
  return NULL;
}

int main(int argc, char **argv) {
  long cpus[MAXCPU];
  int n = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      fprintf(stderr, "hiccup: %s needs a value\n", a);
      return 2;
    }
    if (!strcmp(a, "--cpu")) {
      if (n == MAXCPU) {
        fprintf(stderr, "hiccup: at most %d --cpu\n", MAXCPU);
        return 2;
      }
      cpus[n++] = strtol(v, NULL, 10);
    }
    else if (!strcmp(a, "--period-us")) period_ns = strtoll(v, NULL, 10) * 1000;
    else if (!strcmp(a, "--report-ms")) report_ns = strtoll(v, NULL, 10) * 1000000;
    else {
      fprintf(stderr, "hiccup: unknown option %s\n", a);
      return 2;
    }
    i++;
  }
  if (!n || period_ns <= 0 || report_ns <= 0) {
    fprintf(stderr, "usage: hiccup --cpu N [--cpu M ...] [--period-us 1000] [--report-ms 5]\n");
    return 2;
  }
  for (int i = 0; i < n; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, watch, (void *)cpus[i]) != 0) {
      fprintf(stderr, "hiccup: cannot start a thread\n");
      return 2;
    }
  }
  /* Until stdin closes (the parent went away) or a signal ends the process. */
  char buf[256];
  while (read(0, buf, sizeof buf) > 0) {
  }
  return 0;
}
