// The kernel's price of one loopback write, with nothing of Switchboard in the way:
// N connected TCP pairs on 127.0.0.1, a reader thread on CPU 1 draining them through
// epoll as the bench's receivers do, and this thread on CPU 0 writing SIZE bytes to
// each socket in turn, ROUNDS times. N writes is the shortest possible fan-out round
// to N clients, so N times the time per write is the floor under paced latency.
// Usage: writes N SIZE ROUNDS; prints one JSON line. Run by benches/floor.sh.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int sockets;
static int *client_fds;

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set);
}

static void *drain(void *unused) {
  (void)unused;
  pin(1);
  int epoll = epoll_create1(0);
  for (int i = 0; i < sockets; i++) {
    struct epoll_event event = {.events = EPOLLIN, .data.u32 = (unsigned)i};
    epoll_ctl(epoll, EPOLL_CTL_ADD, client_fds[i], &event);
  }
  static char buffer[65536];
  struct epoll_event ready[256];
  for (;;) {
    int count = epoll_wait(epoll, ready, 256, -1);
    for (int i = 0; i < count; i++) {
      if (read(client_fds[ready[i].data.u32], buffer, sizeof buffer) <= 0) return NULL;
    }
  }
}

static double thread_cpu_us(void) {
  struct rusage usage;
  getrusage(RUSAGE_THREAD, &usage);
  return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + usage.ru_utime.tv_usec +
         usage.ru_stime.tv_usec;
}

static double wall_us(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec * 1e6 + now.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: writes SOCKETS SIZE ROUNDS\n");
    return 2;
  }
  sockets = atoi(argv[1]);
  int size = atoi(argv[2]), rounds = atoi(argv[3]);
  client_fds = calloc(sockets, sizeof *client_fds);
  int *server_fds = calloc(sockets, sizeof *server_fds);
  int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t addr_len = sizeof addr;
  if (bind(listener, (void *)&addr, addr_len) || listen(listener, 4096) ||
      getsockname(listener, (void *)&addr, &addr_len)) {
    perror("listen on 127.0.0.1");
    return 1;
  }
  for (int i = 0; i < sockets; i++) {
    client_fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(client_fds[i], (void *)&addr, addr_len) ||
        (server_fds[i] = accept(listener, NULL, NULL)) < 0) {
      perror("connect (raise ulimit -n?)");
      return 1;
    }
    // As Switchboard's sockets: writes are already whole, so no Nagle delay.
    setsockopt(server_fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  pthread_t reader;
  pthread_create(&reader, NULL, drain, NULL);
  pin(0);
  usleep(100000);
  char *message = malloc(size);
  memset(message, 'x', size);
  double cpu_before = thread_cpu_us(), wall_before = wall_us();
  for (int round = 0; round < rounds; round++) {
    for (int i = 0; i < sockets; i++) {
      if (write(server_fds[i], message, size) != size) {
        perror("write");
        return 1;
      }
    }
  }
  double cpu = thread_cpu_us() - cpu_before, wall = wall_us() - wall_before;
  double writes = (double)rounds * sockets;
  printf("{\"case\":\"floor loopback write N=%d size=%d\",\"sockets\":%d,\"size\":%d,"
         "\"writes\":%.0f,\"cpu_us_per_write\":%.2f,\"wall_us_per_write\":%.2f,"
         "\"round_ms\":%.2f}\n",
         sockets, size, sockets, size, writes, cpu / writes, wall / writes, wall / rounds / 1000);
  return 0;
}
