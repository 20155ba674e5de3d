// `switchboard bench connect` in plain C, to see what the load generator's own core
// allows: CONCURRENCY connections at once, each connecting to 127.0.0.1:PORT, waiting
// for the name prompt, sending a name, waiting for its join notice, then resetting
// (as the bench does, so no TIME_WAIT piles up) and starting over. Counts for SECONDS
// after a one-second warm-up. Usage: register_client PORT CONCURRENCY SECONDS; prints
// one JSON line. Run by benches/floor.sh.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS (1 << 20)

static int epoll, port;
// Names must be unique among those connected: Switchboard refuses a taken one.
static long names_given;
static char named[MAX_FDS];

static void open_one(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  if (fd < 0 || fd >= MAX_FDS) {
    perror("socket");
    exit(1);
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  connect(fd, (void *)&addr, sizeof addr);  // EINPROGRESS; the prompt says it worked
  struct epoll_event readable = {.events = EPOLLIN | EPOLLET, .data.fd = fd};
  epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &readable);
  named[fd] = 0;
}

static double seconds_now(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec + now.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: register_client PORT CONCURRENCY SECONDS\n");
    return 2;
  }
  port = atoi(argv[1]);
  int concurrency = atoi(argv[2]);
  double seconds = atof(argv[3]);
  epoll = epoll_create1(0);
  for (int i = 0; i < concurrency; i++) open_one();
  double measure_from = seconds_now() + 1, measure_until = measure_from + seconds;
  long registered = 0, at_window_start = -1, failed = 0;
  struct epoll_event ready[256];
  char input[4096], name[32];
  double now;
  while ((now = seconds_now()) < measure_until) {
    if (at_window_start < 0 && now >= measure_from) at_window_start = registered;
    int count = epoll_wait(epoll, ready, 256, 100);
    for (int i = 0; i < count; i++) {
      int fd = ready[i].data.fd;
      for (;;) {
        ssize_t got = recv(fd, input, sizeof input, 0);
        int finished = 0;
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
          failed++;
          finished = 1;
        } else if (got < 0) {
          break;
        } else if (!named[fd] && memmem(input, got, "name: ", 6)) {
          int length = snprintf(name, sizeof name, "c%ld\n", names_given++);
          send(fd, name, length, MSG_NOSIGNAL);
          named[fd] = 1;
        } else if (named[fd] && memmem(input, got, " joined ", 8)) {
          registered++;
          finished = 1;
        }
        if (finished) {
          struct linger reset = {.l_onoff = 1, .l_linger = 0};
          setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
          epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL);
          close(fd);
          open_one();
          break;
        }
      }
    }
  }
  printf("{\"case\":\"floor register client\",\"concurrency\":%d,\"connects_per_s\":%.0f,"
         "\"registered\":%ld,\"failed\":%ld}\n",
         concurrency, (registered - at_window_start) / seconds, registered, failed);
  return registered == 0;
}
