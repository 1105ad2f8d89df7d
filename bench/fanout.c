/*
 * Pub/sub fan-out client for bench/fanout.sh: one process, one thread, epoll,
 * non-blocking sockets, 127.0.0.1 only.
 *
 *   fanout sse --port P [--pid PID] [--subs 10000] [--msgs 100] [--interval-ms 20]
 *              [--port2 P2 [--pid2 PID2]] [--redis-pid PID]
 *   fanout lp  --port P [--pid PID] [--subs 10000]
 *
 * Without --pid the server's pid is taken from /_status ("pid").
 *
 * With --port2 (sse only; two linger instances sharing channels through a
 * broker) subscriber i connects to P when i is even and to P2 when it is
 * odd, every message is published on P, and the server figures (CPU, RSS,
 * the "delivered" counter) are totals over both, with each instance's CPU
 * per delivery beside them.  --redis-pid adds the broker's CPU over the
 * burst, summed over its threads.
 *
 * sse: opens --subs SSE subscriptions on channel "fan" (at most --batch
 *   handshakes in flight; a subscription counts once its response head and
 *   the first chunk, "retry: 2000", are in), waits until /_status shows
 *   streaming == subs, then publishes --msgs messages, one every
 *   --interval-ms on a timerfd, from one keep-alive connection.  Each body
 *   is "t=<CLOCK_MONOTONIC ns> seq=<k>".  Every subscriber decodes the
 *   chunked framing and the SSE fields and checks it sees every message
 *   exactly once, in order, with consecutive ids and the exact body sent.
 *
 * lp: opens --subs long polls on channel "lp" in batches of --batch (each
 *   batch waits for /_status held to catch up), waits for held == subs,
 *   publishes one message and times every 200 response, checking its JSON
 *   body carries the message.
 *
 * Prints "RESULT key=value ..." (one line) for the script, then (sse)
 * "RESULT+ key=value ..." with the per-server and broker figures, and
 * "# ..." lines for people.  Server RSS is VmRSS of /proc/PID/status; server
 * CPU is utime+stime of /proc/PID/stat (clock ticks) and, more finely, the
 * first field of /proc/PID/task/TID/schedstat (ns on CPU) summed over the
 * threads.  At exit every socket is closed
 * with SO_LINGER 0 so 20 000 connections per run leave no TIME_WAIT behind
 * on the shared machine.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
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
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ options */

/* The servers subscribers are spread over: [0] is --port, the one that
 * is published to; [1] is --port2. */
#define MAXSRV 2
static int nsrv = 1;
static int srv_port[MAXSRV];
static int srv_pid[MAXSRV];
static int opt_redis_pid;
static int opt_subs = 10000;
static int opt_msgs = 100;
static int opt_interval_ms = 20;
static int opt_batch = 250;
static int opt_drain_s = 30;
static const char *opt_channel;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fanout: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double ms(int64_t ns) { return ns / 1e6; }

static void sleep_ms(int m) {
    struct timespec ts = {m / 1000, (long)(m % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------ /proc */

static long rss_kb_of(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static long rss_kb(void) {
    long kb = 0;
    for (int s = 0; s < nsrv; s++) kb += rss_kb_of(srv_pid[s]);
    return kb;
}

/* utime + stime in clock ticks */
static long cpu_ticks(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    /* after ") ": state(3) ppid(4) ... utime(14) stime(15) */
    long utime = 0, stime = 0;
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
        field++;
        if (field == 14) utime = atol(tok);
        if (field == 15) {
            stime = atol(tok);
            break;
        }
    }
    return utime + stime;
}

/* ns on CPU summed over the process's threads: linger has one, but
 * redis-server has background threads besides the one that serves. */
static int64_t cpu_sched_ns(int pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    int64_t sum = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char p2[320];
        snprintf(p2, sizeof p2, "/proc/%d/task/%s/schedstat", pid, e->d_name);
        FILE *f = fopen(p2, "r");
        if (!f) continue;
        long long v;
        if (fscanf(f, "%lld", &v) == 1) sum += v;
        fclose(f);
    }
    closedir(d);
    return sum;
}

static int64_t self_cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* ticks and sched: totals over the servers; per server and the broker's
 * beside them. */
struct cpu_mark {
    long ticks;
    int64_t sched, self;
    long srv_ticks[MAXSRV], redis_ticks;
    int64_t srv_sched[MAXSRV], redis_sched;
};

static struct cpu_mark cpu_mark(void) {
    struct cpu_mark m = {0};
    for (int s = 0; s < nsrv; s++) {
        m.ticks += m.srv_ticks[s] = cpu_ticks(srv_pid[s]);
        m.sched += m.srv_sched[s] = cpu_sched_ns(srv_pid[s]);
    }
    if (opt_redis_pid) {
        m.redis_ticks = cpu_ticks(opt_redis_pid);
        m.redis_sched = cpu_sched_ns(opt_redis_pid);
    }
    m.self = self_cpu_ns();
    return m;
}

/* ------------------------------------------------------------ sockets */

static struct sockaddr_in srv_addr[MAXSRV];

static int tcp_socket(int nonblock) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void abort_close(int fd) {
    struct linger l = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
}

/* A blocking keep-alive connection for /_status. */
static int status_fds[MAXSRV] = {-1, -1};
static int status_reconnects = -1; /* the first connect is not a reconnect */

static int status_connect(int s) {
    int fd = tcp_socket(0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&srv_addr[s], sizeof srv_addr[s]) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Fetch /_status into buf (NUL-terminated body); 0 on success. */
static char status_buf[8192];

static int status_once(int s) {
    static const char req[] = "GET /_status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (status_fds[s] < 0) {
        if ((status_fds[s] = status_connect(s)) < 0) return -1;
        status_reconnects++;
    }
    if (write(status_fds[s], req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) goto fail;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(status_fds[s], status_buf + len, sizeof status_buf - 1 - len);
        if (n <= 0) goto fail;
        len += n;
        status_buf[len] = 0;
        char *end = strstr(status_buf, "\r\n\r\n");
        if (!end) continue;
        char *cl = strcasestr(status_buf, "\r\ncontent-length:");
        if (!cl || cl > end) goto fail;
        size_t body = strtoul(cl + 17, NULL, 10);
        size_t have = len - (end + 4 - status_buf);
        if (have < body) {
            if (len >= sizeof status_buf - 1) goto fail;
            continue;
        }
        memmove(status_buf, end + 4, body);
        status_buf[body] = 0;
        return 0;
    }
fail:
    close(status_fds[s]);
    status_fds[s] = -1;
    return -1;
}

/* /_status of server s into status_buf; 0 on success. */
static int status_at(int s) {
    for (int i = 0; i < 3; i++)
        if (status_once(s) == 0) return 0;
    return -1;
}

static int status(void) { return status_at(0); }

/* A numeric field of the last /_status answer, -1 if absent. */
static long long status_field(const char *name) {
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", name);
    char *p = strstr(status_buf, key);
    return p ? strtoll(p + strlen(key), NULL, 10) : -1;
}

/* A numeric /_status field summed over the servers, -1 if one is missing. */
static long long status_sum(const char *name) {
    long long sum = 0;
    for (int s = 0; s < nsrv; s++) {
        long long v = status_at(s) == 0 ? status_field(name) : -1;
        if (v < 0) return -1;
        sum += v;
    }
    return sum;
}

/* Wait until /_status field of server s >= want; returns the last value seen. */
static long long wait_status_at(int s, const char *field, long long want, int timeout_ms) {
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000;
    long long v = -1;
    for (;;) {
        if (status_at(s) == 0) v = status_field(field);
        if (v >= want || now_ns() > deadline) return v;
        sleep_ms(20);
    }
}

static long long wait_status(const char *field, long long want, int timeout_ms) {
    return wait_status_at(0, field, want, timeout_ms);
}

/* ------------------------------------------------------------ subscribers */

enum { S_CONNECTING, S_HEAD, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_CRLF, S_BODY, S_DONE, S_FAILED };

struct conn {
    int fd;
    uint8_t state;
    uint8_t established; /* sse: head + retry chunk in; lp: request written */
    uint8_t got_retry;
    uint8_t line_over;
    uint32_t chunk_left;
    char *buf;
    uint32_t len, cap;
    char line[128];
    uint16_t line_len;
    /* the SSE event being assembled */
    int64_t ev_id;
    int64_t ev_t;
    int32_t ev_seq;
    uint8_t ev_data;
    uint8_t ev_bad;
    /* checks */
    int32_t next_seq;
    int64_t id_base; /* id - seq of the first event; -1 before it */
    uint32_t events, ok, dup, gaps, missing, bad_id, bad_data, pings;
    int64_t done_ns; /* lp: response complete */
    int lp_status;
    uint8_t lp_body_ok;
};

static struct conn *conns;
static int epfd;
static int opened, established_n, failed_n, closed_n, closed_detail_logged;

/* publishing */
static int pub_fd = -1;
static int64_t *pub_t;
static int64_t *pub_id;
static long long *pub_reached;
static int pub_sent, pub_answered;
static char pub_in[65536];
static size_t pub_in_len;

/* results */
static int64_t *lat;      /* per delivery, ns */
static size_t lat_n;
static int64_t *first_ns; /* per message: first and last delivery time */
static int64_t *last_ns;
static int64_t last_recv_ns;
/* Subscriber reads that brought data once publishing began: deliveries per
 * read shows how many messages the server put in each write. */
static long sub_reads;
static int counting_reads;

#define PUB_TOKEN (UINT32_MAX - 1)
#define TIMER_TOKEN (UINT32_MAX - 2)

static void ep(int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev = {.events = events, .data.u64 = token};
    if (epoll_ctl(epfd, op, fd, &ev) < 0 && op != EPOLL_CTL_DEL) die("epoll_ctl: %s", strerror(errno));
}

static void conn_fail(int i, const char *why) {
    struct conn *c = &conns[i];
    if (c->state == S_FAILED || c->state == S_DONE) return;
    if (!c->established) failed_n++;
    else closed_n++;
    if (closed_detail_logged++ < 5) printf("# connection %d ended: %s (state %d, events %u)\n", i, why, c->state, c->events);
    c->state = S_FAILED;
    ep(EPOLL_CTL_DEL, c->fd, 0, 0);
}

static void request_line(char *out, size_t cap, int sse) {
    snprintf(out, cap, "GET /sub/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n", opt_channel,
             sse ? "Accept: text/event-stream\r\n" : "");
}

static int sse_mode;
static char sub_request[256];
static size_t sub_request_len;

static void conn_open(int i) {
    struct conn *c = &conns[i];
    memset(c, 0, sizeof *c);
    c->id_base = -1;
    c->fd = tcp_socket(1);
    c->state = S_CONNECTING;
    opened++;
    struct sockaddr_in *a = &srv_addr[i % nsrv];
    int r = connect(c->fd, (struct sockaddr *)a, sizeof *a);
    if (r < 0 && errno != EINPROGRESS) {
        printf("# connect %d: %s\n", i, strerror(errno));
        failed_n++;
        c->state = S_FAILED;
        return;
    }
    ep(EPOLL_CTL_ADD, c->fd, EPOLLOUT, i);
}

static void conn_writable(int i) {
    struct conn *c = &conns[i];
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) return conn_fail(i, strerror(err));
    ssize_t n = write(c->fd, sub_request, sub_request_len);
    if (n != (ssize_t)sub_request_len) return conn_fail(i, "short request write");
    c->state = S_HEAD;
    if (!sse_mode) {
        c->established = 1;
        established_n++;
    }
    ep(EPOLL_CTL_MOD, c->fd, EPOLLIN, i);
}

/* A complete SSE event (blank line). */
static void sse_dispatch(struct conn *c, int64_t t_recv) {
    if (!c->ev_data) goto reset;
    c->events++;
    int32_t seq = c->ev_seq;
    if (c->ev_bad || seq < 0 || seq >= opt_msgs) {
        c->bad_data++;
        goto reset;
    }
    if (c->ev_t != pub_t[seq]) c->bad_data++;
    if (c->id_base < 0) c->id_base = c->ev_id - seq;
    else if (c->ev_id - seq != c->id_base) c->bad_id++;
    if (seq < c->next_seq) {
        c->dup++;
        goto reset;
    }
    if (seq > c->next_seq) {
        c->gaps++;
        c->missing += seq - c->next_seq;
    }
    c->next_seq = seq + 1;
    c->ok++;
    int64_t d = t_recv - pub_t[seq];
    lat[lat_n++] = d;
    if (first_ns[seq] == 0 || t_recv < first_ns[seq]) first_ns[seq] = t_recv;
    if (t_recv > last_ns[seq]) last_ns[seq] = t_recv;
    if (t_recv > last_recv_ns) last_recv_ns = t_recv;
reset:
    c->ev_data = 0;
    c->ev_bad = 0;
    c->ev_id = -1;
    c->ev_seq = -1;
    c->ev_t = -1;
}

static int64_t parse_i64(const char *p, const char *end, const char **stop) {
    int64_t v = 0;
    int any = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (*p++ - '0');
        any = 1;
    }
    *stop = p;
    return any ? v : -1;
}

static void sse_line(struct conn *c, int64_t t_recv) {
    const char *l = c->line, *end = c->line + c->line_len;
    if (c->line_over) {
        c->ev_bad = 1;
        c->line_over = 0;
        return;
    }
    if (c->line_len == 0) return sse_dispatch(c, t_recv);
    if (l[0] == ':') {
        c->pings++;
        return;
    }
    const char *colon = memchr(l, ':', c->line_len);
    const char *v = colon ? colon + 1 : end;
    if (v < end && *v == ' ') v++;
    size_t flen = colon ? (size_t)(colon - l) : c->line_len;
    const char *stop;
    if (flen == 5 && !memcmp(l, "retry", 5)) {
        if (parse_i64(v, end, &stop) == 2000 && stop == end) c->got_retry = 1;
    } else if (flen == 2 && !memcmp(l, "id", 2)) {
        c->ev_id = parse_i64(v, end, &stop);
        if (stop != end) c->ev_bad = 1;
    } else if (flen == 4 && !memcmp(l, "data", 4)) {
        if (c->ev_data) c->ev_bad = 1; /* one line per message here */
        c->ev_data = 1;
        if (end - v < 2 || memcmp(v, "t=", 2)) {
            c->ev_bad = 1;
            return;
        }
        c->ev_t = parse_i64(v + 2, end, &stop);
        if (end - stop < 5 || memcmp(stop, " seq=", 5)) {
            c->ev_bad = 1;
            return;
        }
        c->ev_seq = (int32_t)parse_i64(stop + 5, end, &stop);
        if (stop != end) c->ev_bad = 1;
    } else {
        c->ev_bad = 1;
    }
}

static void sse_feed(struct conn *c, const char *p, size_t n, int64_t t_recv) {
    for (size_t k = 0; k < n; k++) {
        char ch = p[k];
        if (ch == '\n') {
            sse_line(c, t_recv);
            c->line_len = 0;
        } else if (c->line_len < sizeof c->line) {
            c->line[c->line_len++] = ch;
        } else {
            c->line_over = 1;
        }
    }
}

/* Parse what is buffered; returns bytes consumed, -1 on a protocol error,
 * -2 at the last chunk. */
static long sse_parse(int i, int64_t t_recv) {
    struct conn *c = &conns[i];
    char *p = c->buf, *end = c->buf + c->len;
    for (;;) {
        switch (c->state) {
        case S_HEAD: {
            char *h = memmem(p, end - p, "\r\n\r\n", 4);
            if (!h) return p - c->buf;
            *h = 0;
            if (strncmp(p, "HTTP/1.1 200", 12) || !strcasestr(p, "\r\ntransfer-encoding: chunked") ||
                !strcasestr(p, "\r\ncontent-type: text/event-stream")) {
                printf("# subscriber %d: unexpected head: %.200s\n", i, p);
                return -1;
            }
            p = h + 4;
            c->state = S_CHUNK_SIZE;
            break;
        }
        case S_CHUNK_SIZE: {
            char *e = memmem(p, end - p, "\r\n", 2);
            if (!e) return p - c->buf;
            char *stop;
            unsigned long size = strtoul(p, &stop, 16);
            if (stop == p || (stop != e && *stop != ';')) return -1;
            p = e + 2;
            if (size == 0) return -2; /* the last chunk: the server ended the stream */
            c->chunk_left = size;
            c->state = S_CHUNK_DATA;
            break;
        }
        case S_CHUNK_DATA: {
            size_t n = end - p;
            if (n == 0) return p - c->buf;
            if (n > c->chunk_left) n = c->chunk_left;
            sse_feed(c, p, n, t_recv);
            p += n;
            c->chunk_left -= n;
            if (c->chunk_left == 0) c->state = S_CHUNK_CRLF;
            break;
        }
        case S_CHUNK_CRLF:
            if (end - p < 2) return p - c->buf;
            if (p[0] != '\r' || p[1] != '\n') return -1;
            p += 2;
            c->state = S_CHUNK_SIZE;
            if (!c->established && c->got_retry) {
                c->established = 1;
                established_n++;
            }
            break;
        default:
            return -1;
        }
    }
}

/* Long-poll response: head with Content-Length, then the JSON body. */
static char lp_expect[128];

static long lp_parse(int i, int64_t t_recv) {
    struct conn *c = &conns[i];
    char *h = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!h) return 0;
    size_t head_len = h + 4 - c->buf;
    *h = 0;
    char *cl = strcasestr(c->buf, "\r\ncontent-length:");
    size_t body = cl ? strtoul(cl + 17, NULL, 10) : 0;
    *h = '\r';
    if (c->len < head_len + body) return 0;
    c->lp_status = atoi(c->buf + 9);
    c->done_ns = t_recv;
    c->lp_body_ok = c->lp_status == 200 && memmem(c->buf + head_len, body, lp_expect, strlen(lp_expect)) &&
                    memmem(c->buf + head_len, body, "\"last_id\":", 10);
    c->state = S_DONE;
    c->events = 1;
    if (t_recv > last_recv_ns) last_recv_ns = t_recv;
    ep(EPOLL_CTL_DEL, c->fd, 0, 0);
    return head_len + body;
}

static void conn_readable(int i) {
    struct conn *c = &conns[i];
    for (;;) {
        if (!c->buf) {
            c->cap = sse_mode ? 1024 : 2048;
            c->buf = malloc(c->cap);
            if (!c->buf) die("out of memory");
        }
        if (c->len == c->cap) {
            c->cap *= 2;
            c->buf = realloc(c->buf, c->cap);
            if (!c->buf) die("out of memory");
        }
        size_t room = c->cap - c->len;
        ssize_t n = read(c->fd, c->buf + c->len, room);
        if (n < 0) {
            if (errno == EAGAIN) return;
            return conn_fail(i, strerror(errno));
        }
        if (n == 0) return conn_fail(i, "EOF from server");
        sub_reads += counting_reads;
        int64_t t = now_ns();
        c->len += n;
        long used = sse_mode ? sse_parse(i, t) : lp_parse(i, t);
        if (used < 0) return conn_fail(i, used == -2 ? "last chunk (the server ended the stream)" : "protocol error");
        if (c->state == S_DONE) return;
        if (used > 0) {
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
        }
        if ((size_t)n < room) return; /* a short read: the socket is drained */
    }
}

/* ------------------------------------------------------------ publisher */

static void pub_connect(void) {
    pub_fd = tcp_socket(0);
    if (connect(pub_fd, (struct sockaddr *)&srv_addr[0], sizeof srv_addr[0]) < 0) die("publisher connect: %s", strerror(errno));
    fcntl(pub_fd, F_SETFL, fcntl(pub_fd, F_GETFL) | O_NONBLOCK);
    ep(EPOLL_CTL_ADD, pub_fd, EPOLLIN, PUB_TOKEN);
}

static void publish(int k) {
    char body[96], req[256];
    int64_t t = now_ns();
    int bl = snprintf(body, sizeof body, "t=%lld seq=%d", (long long)t, k);
    int rl = snprintf(req, sizeof req,
                      "POST /pub/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                      "Content-Length: %d\r\n\r\n%s",
                      opt_channel, bl, body);
    pub_t[k] = t;
    if (k == 0) snprintf(lp_expect, sizeof lp_expect, "\"data\":\"%s\"", body);
    ssize_t n = write(pub_fd, req, rl);
    if (n != rl) die("publish %d: short write (%zd)", k, n);
    pub_sent++;
}

static void pub_readable(void) {
    for (;;) {
        ssize_t n = read(pub_fd, pub_in + pub_in_len, sizeof pub_in - 1 - pub_in_len);
        if (n < 0 && errno == EAGAIN) break;
        if (n <= 0) die("publisher connection closed");
        pub_in_len += n;
    }
    pub_in[pub_in_len] = 0;
    for (;;) {
        char *h = strstr(pub_in, "\r\n\r\n");
        if (!h) return;
        char *cl = strcasestr(pub_in, "\r\ncontent-length:");
        size_t body = cl && cl < h ? strtoul(cl + 17, NULL, 10) : 0;
        size_t total = h + 4 - pub_in + body;
        if (pub_in_len < total) return;
        if (strncmp(pub_in, "HTTP/1.1 200", 12)) die("publish answered: %.100s", pub_in);
        char *id = strstr(h, "\"id\":"), *subs = strstr(h, "\"subscribers\":");
        if (pub_answered < opt_msgs) {
            pub_id[pub_answered] = id ? atoll(id + 5) : -1;
            pub_reached[pub_answered] = subs ? atoll(subs + 14) : -1;
        }
        pub_answered++;
        memmove(pub_in, pub_in + total, pub_in_len - total + 1);
        pub_in_len -= total;
    }
}

/* ------------------------------------------------------------ statistics */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile of a sorted array */
static int64_t pct(const int64_t *v, size_t n, double p) {
    if (!n) return -1;
    size_t r = (size_t)(p / 100.0 * n + 0.999999);
    if (r < 1) r = 1;
    if (r > n) r = n;
    return v[r - 1];
}

/* ------------------------------------------------------------ runs */

static struct epoll_event events[1024];

static void pump(int timeout_ms, int timer_fd, int *timer_fired) {
    int n = epoll_wait(epfd, events, 1024, timeout_ms);
    for (int e = 0; e < n; e++) {
        uint64_t tok = events[e].data.u64;
        if (tok == TIMER_TOKEN) {
            uint64_t x;
            if (read(timer_fd, &x, sizeof x) == sizeof x && timer_fired) *timer_fired += (int)x;
            continue;
        }
        if (tok == PUB_TOKEN) {
            pub_readable();
            continue;
        }
        int i = (int)tok;
        struct conn *c = &conns[i];
        if (c->state == S_FAILED || c->state == S_DONE) continue;
        if (c->state == S_CONNECTING) conn_writable(i);
        else conn_readable(i);
    }
}

static int64_t t_subscribe_start;

/* Open opt_subs connections with at most opt_batch handshakes in flight. */
static void subscribe_all_sse(void) {
    int next = 0;
    t_subscribe_start = now_ns();
    int64_t deadline = now_ns() + 120LL * 1000000000;
    while (established_n + failed_n < opt_subs && now_ns() < deadline) {
        while (next < opt_subs && opened - established_n - failed_n < opt_batch) conn_open(next++);
        pump(50, -1, NULL);
    }
}

static void subscribe_all_lp(void) {
    int next = 0;
    t_subscribe_start = now_ns();
    while (next < opt_subs) {
        int end = next + opt_batch < opt_subs ? next + opt_batch : opt_subs;
        while (next < end) conn_open(next++);
        int64_t deadline = now_ns() + 10LL * 1000000000;
        while (established_n + failed_n < next && now_ns() < deadline) pump(20, -1, NULL);
        /* the server has them all held before the next batch */
        long long held = wait_status("held", established_n, 10000);
        if (held < established_n) printf("# batch ending at %d: held %lld of %d sent\n", next, held, established_n);
    }
}

static void start_common(void) {
    epfd = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc(opt_subs, sizeof *conns);
    pub_t = calloc(opt_msgs, sizeof *pub_t);
    pub_id = calloc(opt_msgs, sizeof *pub_id);
    pub_reached = calloc(opt_msgs, sizeof *pub_reached);
    first_ns = calloc(opt_msgs, sizeof *first_ns);
    last_ns = calloc(opt_msgs, sizeof *last_ns);
    lat = malloc((size_t)opt_subs * opt_msgs * sizeof *lat);
    if (!conns || !pub_t || !pub_id || !first_ns || !last_ns || !lat) die("out of memory");
    request_line(sub_request, sizeof sub_request, sse_mode);
    sub_request_len = strlen(sub_request);
}

static void finish_common(void) {
    for (int i = 0; i < opt_subs; i++)
        if (conns[i].fd > 0) abort_close(conns[i].fd);
    if (pub_fd >= 0) abort_close(pub_fd);
    for (int s = 0; s < MAXSRV; s++)
        if (status_fds[s] >= 0) abort_close(status_fds[s]);
}

static int run_sse(void) {
    start_common();
    if (status() < 0) die("no /_status from 127.0.0.1:%d", srv_port[0]);
    if (!srv_pid[0]) srv_pid[0] = (int)status_field("pid");
    if (srv_pid[0] <= 0) die("no pid in /_status");
    if (nsrv == 2) {
        if (status_at(1) < 0) die("no /_status from 127.0.0.1:%d", srv_port[1]);
        if (!srv_pid[1]) srv_pid[1] = (int)status_field("pid");
        if (srv_pid[1] <= 0) die("no pid in the second server's /_status");
    }
    sleep_ms(200);
    long rss_before = rss_kb();
    struct cpu_mark c0 = cpu_mark();

    subscribe_all_sse();
    int64_t t_sub_client = now_ns() - t_subscribe_start;
    long long streaming = 0;
    for (int s = 0; s < nsrv; s++) /* subscriber i is on server i % nsrv */
        streaming += wait_status_at(s, "streaming", (opt_subs - s + nsrv - 1) / nsrv, 20000);
    int64_t t_sub = now_ns() - t_subscribe_start;
    printf("# subscribed: %d established, %d failed, %d closed, server streaming=%lld, %.0f ms\n", established_n,
           failed_n, closed_n, streaming, ms(t_sub));
    /* the broker's CPU while nothing is published, for comparison */
    struct cpu_mark c_idle = cpu_mark();
    int64_t t_idle = now_ns();
    sleep_ms(1000);
    long rss_subscribed = rss_kb();
    struct cpu_mark c1 = cpu_mark();
    double idle_s = (now_ns() - t_idle) / 1e9;
    long long delivered0 = status_sum("delivered");

    pub_connect();
    counting_reads = 1;
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    ep(EPOLL_CTL_ADD, tfd, EPOLLIN, TIMER_TOKEN);
    struct itimerspec its = {{opt_interval_ms / 1000, (long)(opt_interval_ms % 1000) * 1000000}, {0, 1}};
    timerfd_settime(tfd, 0, &its, NULL);
    int fired = 0;
    while (pub_sent < opt_msgs) {
        pump(-1, tfd, &fired);
        while (fired > 0 && pub_sent < opt_msgs) {
            publish(pub_sent);
            fired--;
        }
    }
    struct itimerspec off = {{0, 0}, {0, 0}};
    timerfd_settime(tfd, 0, &off, NULL);
    int64_t t_last_pub = now_ns();
    size_t want = (size_t)(established_n - closed_n) * opt_msgs;
    while (now_ns() - t_last_pub < (int64_t)opt_drain_s * 1000000000) {
        size_t live = 0;
        for (int i = 0; i < opt_subs; i++) live += conns[i].state != S_FAILED && conns[i].state != S_DONE;
        want = live * opt_msgs;
        if (lat_n >= want && pub_answered >= opt_msgs) break;
        pump(50, tfd, NULL);
    }
    struct cpu_mark c2 = cpu_mark();
    long rss_after = rss_kb();
    long long delivered1 = status_sum("delivered"), dropped = status_sum("slow_subscribers_dropped"),
              published = status_sum("published"), streaming_after = status_sum("streaming");
    sleep_ms(2000);
    long rss_settled = rss_kb();
    double pub_span_s = (pub_t[opt_msgs - 1] - pub_t[0]) / 1e9;

    /* checks */
    long events = 0, ok = 0, dup = 0, gaps = 0, missing = 0, bad_id = 0, bad_data = 0, pings = 0, complete = 0,
         no_retry = 0, wrong_base = 0;
    for (int i = 0; i < opt_subs; i++) {
        struct conn *c = &conns[i];
        events += c->events;
        ok += c->ok;
        dup += c->dup;
        gaps += c->gaps;
        missing += c->missing + (c->next_seq < opt_msgs ? opt_msgs - c->next_seq : 0);
        bad_id += c->bad_id;
        bad_data += c->bad_data;
        pings += c->pings;
        no_retry += !c->got_retry;
        if (c->id_base >= 0 && pub_answered > 0 && c->id_base != pub_id[0]) wrong_base++;
        if (c->ok == (uint32_t)opt_msgs && !c->dup && !c->gaps && !c->bad_id && !c->bad_data &&
            c->id_base == pub_id[0])
            complete++;
    }
    long expected = (long)opt_subs * opt_msgs;
    long srv_ok[MAXSRV] = {0};
    for (int i = 0; i < opt_subs; i++) srv_ok[i % nsrv] += conns[i].ok;

    qsort(lat, lat_n, sizeof *lat, cmp_i64);
    int64_t *fan = calloc(opt_msgs, sizeof *fan), *fan_first = calloc(opt_msgs, sizeof *fan_first);
    int nf = 0;
    for (int k = 0; k < opt_msgs; k++)
        if (last_ns[k]) {
            fan[nf] = last_ns[k] - pub_t[k];
            fan_first[nf++] = first_ns[k] - pub_t[k];
        }
    qsort(fan, nf, sizeof *fan, cmp_i64);
    qsort(fan_first, nf, sizeof *fan_first, cmp_i64);
    double burst_s = (last_recv_ns - pub_t[0]) / 1e9;
    double rate = burst_s > 0 ? ok / burst_s : 0;
    long hz = sysconf(_SC_CLK_TCK);
    double cpu_burst_ms = (c2.ticks - c1.ticks) * 1000.0 / hz;
    double cpu_burst_sched_ms = ms(c2.sched - c1.sched);
    double cpu_sub_ms = (c1.ticks - c0.ticks) * 1000.0 / hz;
    double client_cpu_burst_ms = ms(c2.self - c1.self);
    double id_seq_ok = 1;
    for (int k = 1; k < pub_answered && k < opt_msgs; k++)
        if (pub_id[k] != pub_id[k - 1] + 1) id_seq_ok = 0;

    printf("# deliveries: %ld in order and exactly once of %ld expected; %ld events; %ld complete subscribers\n", ok,
           expected, events, complete);
    printf("# duplicates %ld, gaps %ld (missing %ld), bad ids %ld, bad data %ld, wrong first id %ld, no retry %ld, "
           "pings %ld\n",
           dup, gaps, missing, bad_id, bad_data, wrong_base, no_retry, pings);
    printf("# publish-to-last-delivery per message ms: p50 %.2f p99 %.2f max %.2f (first delivery p50 %.2f)\n",
           ms(pct(fan, nf, 50)), ms(pct(fan, nf, 99)), ms(pct(fan, nf, 100)), ms(pct(fan_first, nf, 50)));
    printf("# per delivery ms: p50 %.2f p99 %.2f max %.2f\n", ms(pct(lat, lat_n, 50)), ms(pct(lat, lat_n, 99)),
           ms(pct(lat, lat_n, 100)));
    printf("# burst %.3f s, %.0f deliveries/s; server CPU %.0f ms (stat) %.1f ms (schedstat), client CPU %.0f ms\n",
           burst_s, rate, cpu_burst_ms, cpu_burst_sched_ms, client_cpu_burst_ms);
    printf("# publishing took %.3f s (%d intervals of %d ms = %.3f s)\n", pub_span_s, opt_msgs - 1, opt_interval_ms,
           (opt_msgs - 1) * opt_interval_ms / 1e3);
    printf("# server RSS kB: before %ld, subscribed %ld, after burst %ld, 2 s later %ld; server delivered +%lld, published %lld, "
           "dropped slow %lld, streaming after %lld\n",
           rss_before, rss_subscribed, rss_after, rss_settled, delivered1 - delivered0, published, dropped,
           streaming_after);

    printf("RESULT mode=sse subs=%d msgs=%d interval_ms=%d established=%d failed=%d closed=%d streaming=%lld "
           "subscribe_ms=%.0f subscribe_client_ms=%.0f "
           "expected=%ld received=%ld events=%ld complete=%ld dup=%ld gaps=%ld missing=%ld bad_id=%ld bad_data=%ld "
           "wrong_first_id=%ld no_retry=%ld pings=%ld pub_ids_consecutive=%d pub_reached0=%lld "
           "fan_p50_ms=%.3f fan_p99_ms=%.3f fan_max_ms=%.3f first_p50_ms=%.3f "
           "lat_p50_ms=%.3f lat_p99_ms=%.3f lat_max_ms=%.3f burst_s=%.3f deliveries_per_s=%.0f "
           "cpu_burst_ms=%.0f cpu_burst_sched_ms=%.1f cpu_us_per_delivery=%.3f cpu_subscribe_ms=%.0f "
           "client_cpu_burst_ms=%.0f "
           "rss_before_kb=%ld rss_subscribed_kb=%ld rss_after_kb=%ld rss_settled_kb=%ld bytes_per_sub=%.0f "
           "pub_span_s=%.3f server_delivered=%lld server_published=%lld server_dropped_slow=%lld streaming_after=%lld "
           "status_reconnects=%d\n",
           opt_subs, opt_msgs, opt_interval_ms, established_n, failed_n, closed_n, streaming, ms(t_sub),
           ms(t_sub_client), expected, ok, events, complete, dup, gaps, missing, bad_id, bad_data, wrong_base,
           no_retry, pings, (int)id_seq_ok, pub_reached[0], ms(pct(fan, nf, 50)), ms(pct(fan, nf, 99)),
           ms(pct(fan, nf, 100)), ms(pct(fan_first, nf, 50)), ms(pct(lat, lat_n, 50)), ms(pct(lat, lat_n, 99)),
           ms(pct(lat, lat_n, 100)), burst_s, rate, cpu_burst_ms, cpu_burst_sched_ms,
           ok ? cpu_burst_sched_ms * 1000.0 / ok : 0, cpu_sub_ms, client_cpu_burst_ms, rss_before, rss_subscribed,
           rss_after, rss_settled, (rss_subscribed - rss_before) * 1024.0 / opt_subs, pub_span_s,
           delivered1 - delivered0, published, dropped, streaming_after, status_reconnects);
    printf("RESULT+ servers=%d sub_reads=%ld deliveries_per_read=%.2f", nsrv, sub_reads,
           sub_reads ? (double)ok / sub_reads : 0);
    for (int s = 0; s < nsrv; s++) {
        double sched_ms = ms(c2.srv_sched[s] - c1.srv_sched[s]);
        printf(" %c_deliveries=%ld %c_cpu_burst_ms=%.0f %c_cpu_burst_sched_ms=%.1f %c_cpu_us_per_delivery=%.3f", 'a' + s,
               srv_ok[s], 'a' + s, (c2.srv_ticks[s] - c1.srv_ticks[s]) * 1000.0 / hz, 'a' + s, sched_ms, 'a' + s,
               srv_ok[s] ? sched_ms * 1000.0 / srv_ok[s] : 0);
    }
    if (opt_redis_pid) {
        double r_ms = (c2.redis_ticks - c1.redis_ticks) * 1000.0 / hz, r_sched_ms = ms(c2.redis_sched - c1.redis_sched);
        double r_idle_ms_per_s = ms(c1.redis_sched - c_idle.redis_sched) / idle_s;
        printf(" redis_cpu_ms=%.0f redis_cpu_us_per_msg=%.1f redis_cpu_sched_ms=%.2f redis_cpu_sched_us_per_msg=%.1f "
               "redis_idle_ms_per_s=%.3f",
               r_ms, r_ms * 1000.0 / opt_msgs, r_sched_ms, r_sched_ms * 1000.0 / opt_msgs, r_idle_ms_per_s);
        printf("\n# broker CPU during the burst: %.0f ms (stat) %.2f ms (schedstat), %.1f us per message; "
               "idle %.3f ms/s\n", r_ms, r_sched_ms, r_sched_ms * 1000.0 / opt_msgs, r_idle_ms_per_s);
    } else {
        printf("\n");
    }
    fflush(stdout);
    finish_common();
    return complete == opt_subs ? 0 : 3;
}

static int run_lp(void) {
    opt_msgs = 1;
    start_common();
    if (status() < 0) die("no /_status from 127.0.0.1:%d", srv_port[0]);
    if (!srv_pid[0]) srv_pid[0] = (int)status_field("pid");
    if (srv_pid[0] <= 0) die("no pid in /_status");
    sleep_ms(200);
    long rss_before = rss_kb();
    struct cpu_mark c0 = cpu_mark();
    subscribe_all_lp();
    long long held = wait_status("held", opt_subs, 20000);
    int64_t t_sub = now_ns() - t_subscribe_start;
    printf("# held: %d sent, %d failed, %d closed, server held=%lld, %.0f ms\n", established_n, failed_n, closed_n,
           held, ms(t_sub));
    sleep_ms(1000);
    long rss_held = rss_kb();
    long long delivered0 = status() == 0 ? status_field("delivered") : -1;
    struct cpu_mark c1 = cpu_mark();

    pub_connect();
    publish(0);
    int64_t t_pub = pub_t[0];
    for (;;) {
        int done = 0, live = 0;
        for (int i = 0; i < opt_subs; i++) {
            done += conns[i].state == S_DONE;
            live += conns[i].state != S_FAILED;
        }
        if ((done >= live && pub_answered >= 1) || now_ns() - t_pub > (int64_t)opt_drain_s * 1000000000) break;
        pump(50, -1, NULL);
    }
    struct cpu_mark c2 = cpu_mark();
    long rss_after = rss_kb();
    long long delivered1 = -1, held_after = -1;
    if (status() == 0) {
        delivered1 = status_field("delivered");
        held_after = status_field("held");
    }
    sleep_ms(2000);
    long rss_settled = rss_kb();

    long answered = 0, ok = 0, non200 = 0, bad_body = 0;
    lat_n = 0;
    for (int i = 0; i < opt_subs; i++) {
        struct conn *c = &conns[i];
        if (c->state != S_DONE) continue;
        answered++;
        if (c->lp_status != 200) non200++;
        else if (!c->lp_body_ok) bad_body++;
        else ok++;
        lat[lat_n++] = c->done_ns - t_pub;
    }
    qsort(lat, lat_n, sizeof *lat, cmp_i64);
    long hz = sysconf(_SC_CLK_TCK);
    double cpu_ms = (c2.ticks - c1.ticks) * 1000.0 / hz;
    double cpu_sched_ms = ms(c2.sched - c1.sched);
    printf("# answered %ld of %d: %ld with the message, %ld not 200, %ld 200 without it\n", answered, opt_subs, ok,
           non200, bad_body);
    printf("# per request ms: min %.2f p50 %.2f p99 %.2f max (= all answered) %.2f\n", ms(pct(lat, lat_n, 0)), ms(pct(lat, lat_n, 50)),
           ms(pct(lat, lat_n, 99)), ms(pct(lat, lat_n, 100)));
    printf("# server CPU %.0f ms (stat) %.1f ms (schedstat); RSS kB before %ld, held %ld, after %ld, 2 s later %ld; "
           "delivered +%lld\n",
           cpu_ms, cpu_sched_ms, rss_before, rss_held, rss_after, rss_settled, delivered1 - delivered0);
    printf("RESULT mode=lp subs=%d sent=%d failed=%d closed=%d held=%lld hold_ms=%.0f answered=%ld ok=%ld "
           "non200=%ld bad_body=%ld lat_p50_ms=%.3f lat_p99_ms=%.3f lat_max_ms=%.3f all_ms=%.3f "
           "cpu_ms=%.0f cpu_sched_ms=%.1f cpu_us_per_answer=%.3f cpu_hold_ms=%.0f "
           "rss_before_kb=%ld rss_held_kb=%ld rss_after_kb=%ld rss_settled_kb=%ld bytes_per_held=%.0f "
           "pub_reached=%lld server_delivered=%lld held_after=%lld client_cpu_ms=%.0f status_reconnects=%d\n",
           opt_subs, established_n, failed_n, closed_n, held, ms(t_sub), answered, ok, non200, bad_body,
           ms(pct(lat, lat_n, 50)), ms(pct(lat, lat_n, 99)), ms(pct(lat, lat_n, 100)), ms(pct(lat, lat_n, 100)),
           cpu_ms, cpu_sched_ms, answered ? cpu_sched_ms * 1000.0 / answered : 0,
           (c1.ticks - c0.ticks) * 1000.0 / hz, rss_before, rss_held, rss_after, rss_settled,
           (rss_held - rss_before) * 1024.0 / opt_subs, pub_reached[0], delivered1 - delivered0, held_after,
           ms(c2.self - c1.self), status_reconnects);
    fflush(stdout);
    finish_common();
    return ok == opt_subs ? 0 : 3;
}

int main(int argc, char **argv) {
    if (argc < 2) die("usage: fanout sse|lp --port P [--pid PID] [--subs N] [--msgs M] [--interval-ms I] [--batch B]");
    const char *mode = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--port")) srv_port[0] = atoi(v);
        else if (!strcmp(k, "--pid")) srv_pid[0] = atoi(v);
        else if (!strcmp(k, "--port2")) srv_port[1] = atoi(v), nsrv = 2;
        else if (!strcmp(k, "--pid2")) srv_pid[1] = atoi(v);
        else if (!strcmp(k, "--redis-pid")) opt_redis_pid = atoi(v);
        else if (!strcmp(k, "--subs")) opt_subs = atoi(v);
        else if (!strcmp(k, "--msgs")) opt_msgs = atoi(v);
        else if (!strcmp(k, "--interval-ms")) opt_interval_ms = atoi(v);
        else if (!strcmp(k, "--batch")) opt_batch = atoi(v);
        else if (!strcmp(k, "--drain-s")) opt_drain_s = atoi(v);
        else if (!strcmp(k, "--channel")) opt_channel = v;
        else die("unknown option %s", k);
    }
    if (!srv_port[0] || opt_subs < 1 || opt_msgs < 1 || opt_interval_ms < 1 || opt_batch < 1)
        die("--port is required; counts must be positive");
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)opt_subs + 64) die("open-file limit %ld is below subs + 64", (long)rl.rlim_cur);
    for (int s = 0; s < nsrv; s++) {
        srv_addr[s].sin_family = AF_INET;
        srv_addr[s].sin_port = htons(srv_port[s]);
        srv_addr[s].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "sse")) {
        sse_mode = 1;
        if (!opt_channel) opt_channel = "fan";
        return run_sse();
    }
    if (!strcmp(mode, "lp")) {
        if (nsrv > 1) die("--port2 is for sse only");
        if (!opt_channel) opt_channel = "lp";
        return run_lp();
    }
    die("mode must be sse or lp");
}
