// The line door's registration and nothing else, as cheap as epoll allows: send the
// name prompt, read a name line, answer with the welcome and the join notice, close
// when the client leaves. What a connect+register costs a server on this machine with
// no chat server behind it. Usage: register_server PORT (127.0.0.1). Run by
// benches/floor.sh.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS (1 << 20)

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: register_server PORT\n");
    return 2;
  }
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  // Inherited by every accepted socket, as with Switchboard's listeners.
  setsockopt(listener, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons(atoi(argv[1])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(listener, (void *)&addr, sizeof addr) || listen(listener, 4096)) {
    perror("listen on 127.0.0.1");
    return 1;
  }
  int epoll = epoll_create1(0);
  struct epoll_event event = {.events = EPOLLIN, .data.fd = listener};
  epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &event);
  static char named[MAX_FDS];
  static const char prompt[] = "Enter your name: ";
  struct epoll_event ready[256];
  char input[4096], answer[256];
  for (;;) {
    int count = epoll_wait(epoll, ready, 256, -1);
    for (int i = 0; i < count; i++) {
      int fd = ready[i].data.fd;
      if (fd == listener) {
        int client;
        while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (client >= MAX_FDS) {
            close(client);
            continue;
          }
          struct epoll_event readable = {.events = EPOLLIN | EPOLLET, .data.fd = client};
          epoll_ctl(epoll, EPOLL_CTL_ADD, client, &readable);
          named[client] = 0;
          send(client, prompt, sizeof prompt - 1, MSG_NOSIGNAL);
        }
        continue;
      }
      for (;;) {
        ssize_t got = recv(fd, input, sizeof input, 0);
        if (got > 0) {
          char *newline = memchr(input, '\n', got);
          if (!named[fd] && newline) {
            int length = snprintf(answer, sizeof answer,
                                  "Welcome! Type /help for commands.\n*** %.*s joined #general\n",
                                  (int)(newline - input), input);
            send(fd, answer, length, MSG_NOSIGNAL);
            named[fd] = 1;
          }
          continue;
        }
        if (got < 0 && errno == EAGAIN) break;
        // The client left (end of stream or reset).
        epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL);
        close(fd);
        break;
      }
    }
  }
}
