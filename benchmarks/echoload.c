/*
 * echoload: ping-pong load generator for an echo server (epoll, one thread).
 *
 *   echoload HOST PORT CONNECTIONS SIZE WARMUP_S DURATION_S
 *
 * Each connection sends SIZE bytes, waits until SIZE bytes came back, and
 * sends again.  After WARMUP_S seconds it counts completed round trips and
 * their latencies for DURATION_S seconds, then prints one JSON line:
 *   {"requests": N, "all_requests": M, "seconds": S, "p50_us": X, "p99_us": Y, "errors": E}
 * (all_requests also counts the warm-up, to divide the server's CPU time by).
 * Built by benchmarks/run.py with gcc -O2; used only against 127.0.0.1.
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
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    size_t sent, received;
    uint64_t started;
} conn_t;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static char *payload;
static size_t size;
static int epfd;

static int push(conn_t *c) {
    while (c->sent < size) {
        ssize_t n = send(c->fd, payload + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                return 0;
            }
            return -1;
        }
        c->sent += (size_t)n;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS SIZE WARMUP_S DURATION_S\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), nconn = atoi(argv[3]);
    size = (size_t)atol(argv[4]);
    double warmup = atof(argv[5]), duration = atof(argv[6]);
    payload = malloc(size);
    for (size_t i = 0; i < size; i++) payload[i] = (char)('a' + i % 26);
    size_t rbufsize = size > 65536 ? size : 65536;
    char *rbuf = malloc(rbufsize);

    epfd = epoll_create1(0);
    conn_t *conns = calloc((size_t)nconn, sizeof(conn_t));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    for (int i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("connect"); return 1; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    }

    size_t cap = 1 << 20, nlat = 0;
    uint32_t *lat = malloc(cap * sizeof(uint32_t));
    uint64_t start = now_ns();
    uint64_t measureFrom = start + (uint64_t)(warmup * 1e9);
    uint64_t end = measureFrom + (uint64_t)(duration * 1e9);
    uint64_t requests = 0, errors = 0, all = 0;
    for (int i = 0; i < nconn; i++) {
        conns[i].started = now_ns();
        if (push(&conns[i]) < 0) errors++;
    }
    struct epoll_event events[256];
    int live = nconn;
    while (live > 0) {
        uint64_t t = now_ns();
        if (t >= end) break;
        int n = epoll_wait(epfd, events, 256, 100);
        for (int k = 0; k < n; k++) {
            conn_t *c = events[k].data.ptr;
            if (c->fd < 0) continue;
            if (events[k].events & EPOLLOUT) {
                if (push(c) < 0) { errors++; close(c->fd); c->fd = -1; live--; continue; }
            }
            if (events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                for (;;) {
                    ssize_t r = recv(c->fd, rbuf, rbufsize, 0);
                    if (r > 0) {
                        c->received += (size_t)r;
                        if (c->received < size) continue;
                        if (c->received > size) { errors++; }
                        uint64_t done = now_ns();
                        all++;
                        if (done >= measureFrom && done < end) {
                            requests++;
                            if (nlat == cap) { cap *= 2; lat = realloc(lat, cap * sizeof(uint32_t)); }
                            uint64_t us = (done - c->started) / 1000;
                            lat[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
                        }
                        c->sent = c->received = 0;
                        c->started = done;
                        if (push(c) < 0) { errors++; close(c->fd); c->fd = -1; live--; }
                        break;
                    }
                    if (r == 0 || (r < 0 && errno != EAGAIN)) {
                        errors++; close(c->fd); c->fd = -1; live--;
                    }
                    break;
                }
            }
        }
    }
    qsort(lat, nlat, sizeof(uint32_t), cmp_u32);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
    printf("{\"requests\": %llu, \"all_requests\": %llu, \"seconds\": %.3f, \"p50_us\": %.0f, \"p99_us\": %.0f, "
           "\"errors\": %llu}\n",
           (unsigned long long)requests, (unsigned long long)all, duration, p50, p99, (unsigned long long)errors);
    for (int i = 0; i < nconn; i++) if (conns[i].fd >= 0) close(conns[i].fd);
    return 0;
}
