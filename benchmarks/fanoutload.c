/*
 * fanoutload: chat fan-out load generator (epoll, one thread), one program for
 * both servers it compares: echofile (guest sessions: AUTH, SAY) and an IRC
 * server (NICK/USER, JOIN one channel, PRIVMSG to it).
 *
 *   fanoutload echofile PORT RECEIVERS[,RECEIVERS...] ROUNDS PASSWORD
 *   fanoutload irc      PORT RECEIVERS[,RECEIVERS...] ROUNDS CHANNEL
 *
 * For each RECEIVERS (increasing) it opens sessions until RECEIVERS + 1 are
 * logged in (or joined), prints {"ready": RECEIVERS, ...} and waits for a line
 * on stdin (so that the driver can read the server's CPU time), then runs
 * ROUNDS rounds: the first session sends "SAY fanout K" (or "PRIVMSG #chan
 * :fanout K"), and a round is over when every other session has a line ending
 * in "fanout K".  Timing rule, the same for both: from just before the send
 * until the last receiver has read the line.  A few warm-up rounds first are
 * not counted.  Then it prints one JSON line per RECEIVERS:
 *   {"receivers": N, "rounds": R, "p50_us": X, "p99_us": Y, "max_us": Z,
 *    "extra": E, "client_cpu_s": C, "rounds_s": S}
 * (client_cpu_s / rounds_s: how busy the load generator itself was).
 * After the last one, {"done": true}.  Answers PING with PONG.  Built by
 * benchmarks/fanoutbench.py with gcc -O2; used only against 127.0.0.1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 5
/* Sessions connecting or logging in at once, below the server's listen backlog (ngircd's is 10: an
 * overflowing accept queue costs a SYN retransmission, a second or more, or a reset). */
#define MAX_INFLIGHT 8
/* IRC sessions that JOIN at once: each JOIN is announced to every member, so one batch is one write per
 * member instead of one per JOIN (5,000 members are 12.5 million JOIN lines). */
#define JOIN_BATCH 200
#define LINE_MAX_LEN 8192

enum { CONNECTING, GREETING, LOGGING_IN, REGISTERED, JOINING, READY };

typedef struct {
    int fd, state, index;
    size_t have;
    char buf[LINE_MAX_LEN];
} conn_t;

static int irc, epfd, port;
static const char *secret; /* password (echofile) or channel (irc) */
static conn_t **conns;
static int opened, ready, inflight, registered, joining;
static int measuring, expected, current = -1;
static long *counts;     /* per round: receivers that have its line */
static long extra;
static uint64_t doneAt, joinsFrom;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what, conn_t *c, const char *line) {
    fprintf(stderr, "fanoutload: %s (session %d%s%s)\n", what, c ? c->index : -1, line ? ": " : "", line ? line : "");
    exit(1);
}

static void sendAll(conn_t *c, const char *data, size_t len) {
    /* Small lines into an almost empty socket buffer: a short write here means the server stopped reading. */
    while (len) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            die("send failed", c, strerror(errno));
        }
        data += n;
        len -= (size_t)n;
    }
}

static void sendf(conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sendf(conn_t *c, const char *fmt, ...) {
    char out[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, sizeof out, fmt, ap);
    va_end(ap);
    sendAll(c, out, (size_t)n);
}

static void becameReady(conn_t *c) {
    c->state = READY;
    ready++;
    inflight--;
}

static void connected(conn_t *c) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    if (irc) {
        sendf(c, "NICK f%d\r\nUSER f%d 0 * :fanout\r\n", c->index, c->index);
        c->state = LOGGING_IN;
    } else {
        c->state = GREETING;
    }
}

/* The number after a trailing "fanout " on a chat line, or -1. */
static long fanoutNumber(const char *line, size_t len) {
    if (len == 0 || (line[0] != '*' && line[0] != ':')) return -1;
    if (irc && !memmem(line, len, " PRIVMSG ", 9)) return -1;
    size_t i = len;
    while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9') i--;
    if (i == len || i < 7 || memcmp(line + i - 7, "fanout ", 7) != 0) return -1;
    return strtol(line + i, NULL, 10);
}

/* The numeric reply code of an IRC line (":server 001 nick ..."), or -1. */
static int numeric(const char *line) {
    const char *sp = line[0] == ':' ? strchr(line, ' ') : NULL;
    if (!sp || !(sp[1] >= '0' && sp[1] <= '9') || !(sp[2] >= '0' && sp[2] <= '9') || !(sp[3] >= '0' && sp[3] <= '9')
        || sp[4] != ' ')
        return -1;
    return (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
}

static void lineReceived(conn_t *c, char *line, size_t len) {
    if (len && line[len - 1] == '\r') line[--len] = 0;
    line[len] = 0;
    long k = fanoutNumber(line, len);
    if (k >= 0) {
        if (c->index == 0 || k != current || !measuring) { extra++; return; }
        if (++counts[k] == expected) doneAt = now_ns();
        return;
    }
    if (irc && len > 5 && memcmp(line, "PING ", 5) == 0) {
        sendf(c, "PONG %s\r\n", line + 5);
        return;
    }
    switch (c->state) {
    case GREETING:
        if (strcmp(line, "#Server Ready.") != 0) die("unexpected greeting", c, line);
        sendf(c, "AUTH %s\r\n", secret);
        c->state = LOGGING_IN;
        break;
    case LOGGING_IN:
        if (!irc) {
            if (strcmp(line, "#You are logged in.") != 0) die("login failed", c, line);
            becameReady(c);
        } else if (numeric(line) == 1) {
            c->state = REGISTERED;  /* joins later, in a batch */
            registered++;
            inflight--;
        } else if (numeric(line) >= 400 || strncmp(line, "ERROR", 5) == 0) {
            die("registration failed", c, line);
        }
        break;
    case JOINING:
        if (numeric(line) == 366) { c->state = READY; ready++; joining--; }  /* end of NAMES: joined */
        else if (strncmp(line, "ERROR", 5) == 0 || numeric(line) >= 400)
            die("join failed", c, line);
        break;
    default:
        break; /* JOIN notices of later members, the sender's "#Said.", MOTD lines ... */
    }
}

static void readable(conn_t *c) {
    for (;;) {
        size_t room = sizeof c->buf - 1 - c->have;
        ssize_t n = recv(c->fd, c->buf + c->have, room, 0);
        if (n == 0) die("server closed the connection", c, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            die("recv failed", c, strerror(errno));
        }
        if (measuring) {
            /* ACK at once: a delayed ACK would make the server's Nagle hold the next round's line (40 ms). */
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        }
        c->have += (size_t)n;
        char *start = c->buf, *end = c->buf + c->have, *nl;
        while ((nl = memchr(start, '\n', (size_t)(end - start))) != NULL) {
            lineReceived(c, start, (size_t)(nl - start));
            start = nl + 1;
        }
        c->have = (size_t)(end - start);
        if (c->have == sizeof c->buf - 1) die("line too long", c, NULL);
        memmove(c->buf, start, c->have);
        if ((size_t)n < room) return;  /* drained (epoll is level-triggered: more is reported again), no EAGAIN recv */
    }
}

static void openOne(void) {
    conn_t *c = calloc(1, sizeof *c);
    c->index = opened;
    conns[opened++] = c;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) die("connect failed", c, strerror(errno));
    c->state = CONNECTING;
    inflight++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static int poll_once(int timeoutMs) {
    struct epoll_event events[1024];
    int n = epoll_wait(epfd, events, 1024, timeoutMs);
    for (int i = 0; i < n; i++) {
        conn_t *c = events[i].data.ptr;
        if (c->state == CONNECTING) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) die("connect failed", c, strerror(err));
            if (!(events[i].events & EPOLLOUT)) continue;
            connected(c);
        }
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readable(c);
    }
    return n;
}

/* Until nothing arrived for ms milliseconds. */
static void settle(int ms) {
    while (poll_once(ms) > 0) {}
}

static void grow(int sessions) {
    uint64_t deadline = now_ns() + 300ull * 1000000000ull;
    int next = opened;  /* the first IRC session not yet asked to JOIN */
    while (ready < sessions) {
        while (inflight < MAX_INFLIGHT && opened < sessions) openOne();
        if (irc && opened == sessions && inflight == 0 && joining == 0) {
            /* Everyone registered: the next batch joins. */
            if (!joinsFrom) joinsFrom = now_ns();
            for (int n = 0; n < JOIN_BATCH && next < sessions; n++, next++) {
                sendf(conns[next], "JOIN %s\r\n", secret);
                conns[next]->state = JOINING;
                joining++;
            }
        }
        poll_once(100);
        if (now_ns() > deadline) die("sessions not ready within 300 s", NULL, NULL);
    }
}

int main(int argc, char **argv) {
    if (argc != 6 || (strcmp(argv[1], "echofile") != 0 && strcmp(argv[1], "irc") != 0)) {
        fprintf(stderr, "usage: %s echofile|irc PORT RECEIVERS[,RECEIVERS...] ROUNDS PASSWORD|CHANNEL\n", argv[0]);
        return 2;
    }
    irc = strcmp(argv[1], "irc") == 0;
    port = atoi(argv[2]);
    int rounds = atoi(argv[4]);
    secret = argv[5];
    int most = 0;
    for (char *p = argv[3]; *p;) {
        int r = (int)strtol(p, &p, 10);
        if (r > most) most = r;
        if (*p == ',') p++;
    }
    conns = calloc((size_t)most + 1, sizeof *conns);
    uint32_t *lat = malloc((size_t)rounds * sizeof *lat);
    epfd = epoll_create1(0);
    setvbuf(stdout, NULL, _IOLBF, 0);
    long number = 0;  /* round numbers go on across the RECEIVERS values: a late line is never counted twice */
    for (char *p = argv[3]; *p;) {
        int receivers = (int)strtol(p, &p, 10);
        if (*p == ',') p++;
        uint64_t t0 = now_ns();
        joinsFrom = 0;
        grow(receivers + 1);
        double joins = joinsFrom ? (now_ns() - joinsFrom) / 1e9 : 0;
        /* Let what setup set off (the JOIN notices an IRC server sends every member) drain first. */
        settle(200);
        printf("{\"ready\": %d, \"setup_s\": %.2f, \"joins_s\": %.2f}\n", receivers, (now_ns() - t0) / 1e9, joins);
        char go[16];
        if (!fgets(go, sizeof go, stdin)) return 1;
        expected = receivers;
        counts = realloc(counts, (size_t)(number + rounds + WARMUP) * sizeof *counts);
        memset(counts + number, 0, (size_t)(rounds + WARMUP) * sizeof *counts);
        extra = 0;
        measuring = 1;
        double cpu0 = 0;
        uint64_t wall0 = 0;
        for (int r = 0; r < rounds + WARMUP; r++, number++) {
            if (r == WARMUP) { cpu0 = cpu_s(); wall0 = now_ns(); }
            current = (int)number;
            doneAt = 0;
            char line[128];
            int n = irc ? snprintf(line, sizeof line, "PRIVMSG %s :fanout %ld\r\n", secret, number)
                        : snprintf(line, sizeof line, "SAY fanout %ld\r\n", number);
            uint64_t sent = now_ns();
            sendAll(conns[0], line, (size_t)n);
            while (!doneAt) {
                poll_once(1000);
                if (now_ns() - sent > 30ull * 1000000000ull) die("a round took over 30 s", NULL, NULL);
            }
            if (r >= WARMUP) {
                uint64_t us = (doneAt - sent) / 1000;
                lat[r - WARMUP] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
            }
        }
        double cpu = cpu_s() - cpu0, wall = (now_ns() - wall0) / 1e9;
        /* Late or duplicate lines would show up as extra: give them a moment. */
        settle(100);
        measuring = 0;
        qsort(lat, (size_t)rounds, sizeof *lat, cmp_u32);
        size_t i99 = (size_t)(rounds * 0.99);
        if (i99 >= (size_t)rounds) i99 = (size_t)rounds - 1;
        printf("{\"receivers\": %d, \"rounds\": %d, \"p50_us\": %u, \"p99_us\": %u, \"max_us\": %u, \"extra\": %ld, "
               "\"client_cpu_s\": %.4f, \"rounds_s\": %.4f}\n",
               receivers, rounds, lat[rounds / 2], lat[i99], lat[rounds - 1], extra, cpu, wall);
    }
    printf("{\"done\": true}\n");
    for (int i = 0; i < opened; i++) close(conns[i]->fd);
    return 0;
}
