/* nbcat: netcat as event-driven programs do their I/O, for the busybox test image.
 * Sockets are non-blocking from creation (connect, listen, accept4) and wait in poll():
 * meshaccel accelerates only such programs (docs/design.md), and busybox's nc blocks.
 *   nbcat HOST PORT          stdin to the connection, then shutdown(SHUT_WR) and wait for EOF
 *   nbcat -l PORT CMD...     each connection's bytes piped into CMD's stdin, forever */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }

static void wait_for(int fd, short events) {
    struct pollfd p = {fd, events, 0};
    if (poll(&p, 1, 60000) != 1) { fprintf(stderr, "nbcat: poll timed out\n"); exit(1); }
}

/* Writes all of buf to a non-blocking socket or a blocking pipe. */
static void write_all(int fd, const char *buf, ssize_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EAGAIN) { wait_for(fd, POLLOUT); continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) die("write");
        buf += w; n -= w;
    }
}

/* Reads a non-blocking socket to EOF; each chunk to out (or nowhere when out < 0). */
static void drain(int s, int out) {
    char buf[65536];
    for (;;) {
        ssize_t r = read(s, buf, sizeof buf);
        if (r < 0 && errno == EAGAIN) { wait_for(s, POLLIN); continue; }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("read");
        if (r == 0) return;
        if (out >= 0) write_all(out, buf, r);
    }
}

static int client(const char *host, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) die("address");
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        if (errno != EINPROGRESS) die("connect");
        wait_for(s, POLLOUT);
        int err = 0; socklen_t len = sizeof err;
        getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { errno = err; die("connect"); }
    }
    char buf[65536];
    ssize_t r;
    while ((r = read(0, buf, sizeof buf)) != 0) {
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("read stdin");
        write_all(s, buf, r);
    }
    shutdown(s, SHUT_WR);
    drain(s, -1);
    return 0;
}

static void serve_one(int c, char **cmd) {
    int p[2];
    if (pipe(p) < 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        dup2(p[0], 0); close(p[0]); close(p[1]); close(c);
        execvp(cmd[0], cmd);
        die("exec");
    }
    close(p[0]);
    drain(c, p[1]);
    close(p[1]);
    waitpid(pid, NULL, 0);
}

static int server(int port, char **cmd) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (l < 0) die("socket");
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 64) < 0) die("listen");
    signal(SIGCHLD, SIG_IGN); /* connection handlers reap themselves */
    for (;;) {
        int c = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd p = {l, POLLIN, 0};
            poll(&p, 1, -1);
            continue;
        }
        if (c < 0) die("accept4");
        pid_t pid = fork();
        if (pid == 0) { signal(SIGCHLD, SIG_DFL); close(l); serve_one(c, cmd); _exit(0); }
        close(c);
    }
}

int main(int argc, char **argv) {
    if (argc >= 4 && argv[1][0] == '-' && argv[1][1] == 'l') return server(atoi(argv[2]), argv + 3);
    if (argc == 3) return client(argv[1], atoi(argv[2]));
    fprintf(stderr, "usage: nbcat HOST PORT | nbcat -l PORT CMD...\n");
    return 2;
}
