/*
 * HTTPS load client for bench/tls.sh: one process, one thread, epoll,
 * non-blocking sockets, OpenSSL, 127.0.0.1 only. The same code speaks
 * plain HTTP with --plain, so a TLS figure and its plain baseline differ
 * only by the TLS layer.
 *
 *   tlsload conn --port P --ca CA [--resume] [--conns 50] [--seconds 5]
 *   tlsload idle --port P --ca CA --pids PID,PID [--conns 10000]
 *   tlsload sse  --port P --ca CA --pub-port Q --pids PID,PID [--subs 1000] [--msgs 200]
 *
 * conn: --conns slots, each in a loop for --seconds: connect, handshake,
 *   "GET --path" with Connection: close, read the whole response, send
 *   close_notify, close. Without --resume every handshake is a full one
 *   (no session is ever offered); with --resume each slot offers the
 *   session (TLS 1.3 ticket) of its previous connection. Whether each
 *   handshake was resumed is counted from SSL_session_reused(), so the
 *   mode is checked, not assumed.
 * idle: opens --conns connections (at most --batch in flight), one GET on
 *   each, keeps them all open and idle; server VmRSS (summed over --pids)
 *   before (after one warm-up request) and 1 s after: bytes per connection.
 * sse: opens --subs subscriptions "GET /sub/CH" with Accept:
 *   text/event-stream; once every one has its response head, publishes
 *   --msgs messages "m<k>" back to back (each POST waits for the previous
 *   answer) on one plain keep-alive connection to --pub-port, and counts
 *   the "data: m<k>" lines every subscriber reads, checking each sees
 *   every k once and in order.
 *
 * Server CPU: the first field of /proc/PID/schedstat (ns on CPU), summed
 * over --pids, across the measured window. Prints "RESULT key=value ...".
 * Connections still open at exit are closed with SO_LINGER 0 so that
 * thousands of them leave no TIME_WAIT behind.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
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

static const char *mode, *opt_ca, *opt_path = "/hello.txt", *opt_channel = "tls";
static int opt_port, opt_pub_port, opt_plain, opt_resume, opt_conns = 50, opt_seconds = 5;
static int opt_batch = 200, opt_subs = 1000, opt_msgs = 200, opt_timeout = 120;
static int pids[16], npids;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tlsload: ");
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

/* ------------------------------------------------------------ /proc */

static int64_t server_cpu_ns(void) {
    int64_t total = 0;
    for (int i = 0; i < npids; i++) {
        char path[64];
        long long v = 0;
        snprintf(path, sizeof path, "/proc/%d/schedstat", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fscanf(f, "%lld", &v) == 1) total += v;
        fclose(f);
    }
    return total;
}

static long server_rss_kb(void) {
    long total = 0;
    for (int i = 0; i < npids; i++) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/status", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "VmRSS:", 6)) total += strtol(line + 6, NULL, 10);
        fclose(f);
    }
    return total;
}

static int64_t self_cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* ------------------------------------------------------------ connections */

enum { C_FREE, C_CONNECTING, C_HANDSHAKE, C_SEND, C_READ, C_IDLE, C_STREAM };

struct conn {
    int fd;
    uint8_t st, reused;
    SSL *ssl;
    SSL_SESSION *sess; /* conn --resume: offered on the slot's next connection */
    char buf[4096];    /* response head (and body) until it is complete */
    uint32_t len;
    char line[64]; /* sse: the current line, cut at 63 bytes */
    uint16_t line_len;
    int32_t next_seq, got, bad;
};

static struct conn *conns;
static int nconns, epfd;
static SSL_CTX *ctx;
static struct sockaddr_in addr;
static char request[512];
static size_t request_len;
static long done_n, fail_n, reused_n, established_n, closed_n;
static char proto_seen[64] = "plain", cipher_seen[64] = "-", group_seen[32] = "-";

static void ep(int op, struct conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0 && op != EPOLL_CTL_DEL) die("epoll_ctl: %s", strerror(errno));
}

static void conn_close(struct conn *c, int abortive) {
    if (c->st == C_FREE) return;
    ep(EPOLL_CTL_DEL, c, 0);
    if (c->ssl) {
        /* Offer this session next time only if the server gave one that
         * can be resumed (a TLS 1.3 ticket has arrived by now). */
        if (opt_resume && SSL_is_init_finished(c->ssl)) {
            SSL_SESSION *s = SSL_get1_session(c->ssl);
            if (s && SSL_SESSION_is_resumable(s)) {
                SSL_SESSION_free(c->sess);
                c->sess = s;
            } else {
                SSL_SESSION_free(s);
            }
        }
        /* A well-behaved client says close_notify (RFC 8446 §6.1); it does
         * not wait for the server's, as browsers do not. */
        if (!abortive && SSL_is_init_finished(c->ssl)) SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (abortive) {
        struct linger l = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(c->fd);
    ERR_clear_error();
    c->st = C_FREE;
}

static void conn_open(struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->len = c->line_len = 0;
    c->next_seq = 1;
    c->reused = 0;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS)
        die("connect: %s", strerror(errno));
    if (!opt_plain) {
        c->ssl = SSL_new(ctx);
        if (!c->ssl) die("SSL_new failed");
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, "localhost");
        SSL_set1_host(c->ssl, "localhost");
        if (opt_resume && c->sess) SSL_set_session(c->ssl, c->sess);
        SSL_set_connect_state(c->ssl);
    }
    c->st = C_CONNECTING;
    ep(EPOLL_CTL_ADD, c, EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP);
}

/* Read or write through TLS or not: >0 bytes, 0 end of stream, -1 would
 * block, -2 error. */
static int io(struct conn *c, int writing, void *p, size_t n) {
    if (opt_plain) {
        ssize_t r = writing ? write(c->fd, p, n) : read(c->fd, p, n);
        if (r >= 0) return (int)r;
        return errno == EAGAIN ? -1 : -2;
    }
    int r = writing ? SSL_write(c->ssl, p, (int)n) : SSL_read(c->ssl, p, (int)n);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return -1;
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    if (e == SSL_ERROR_SYSCALL && r == 0) return 0;
    return -2;
}

/* The response in c->buf is complete: 1, not yet: 0, malformed: -1. */
static int response_complete(struct conn *c) {
    c->buf[c->len < sizeof c->buf ? c->len : sizeof c->buf - 1] = 0;
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end) return c->len >= sizeof c->buf - 1 ? -1 : 0;
    if (strncmp(c->buf, "HTTP/1.1 200", 12) && strncmp(c->buf, "HTTP/1.0 200", 12)) return -1;
    if (!strcmp(mode, "sse")) return 1; /* a stream: the head is enough */
    char *cl = strcasestr(c->buf, "\r\ncontent-length:");
    if (!cl || cl > end) return -1;
    size_t body = strtoul(cl + 17, NULL, 10);
    return c->len >= (size_t)(end + 4 - c->buf) + body;
}

static void note_session(struct conn *c) {
    if (opt_plain || group_seen[1]) return;
    snprintf(proto_seen, sizeof proto_seen, "%s", SSL_get_version(c->ssl));
    snprintf(cipher_seen, sizeof cipher_seen, "%s", SSL_get_cipher_name(c->ssl));
    const char *g = SSL_group_to_name(c->ssl, SSL_get_negotiated_group(c->ssl));
    snprintf(group_seen, sizeof group_seen, "%s", g ? g : "?");
}

/* SSE: scan the stream for "data: m<k>" lines (chunk-size lines and the
 * other SSE fields do not start with "data: "). */
static void sse_bytes(struct conn *c, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') {
            if (c->line_len < sizeof c->line - 1) c->line[c->line_len++] = p[i];
            continue;
        }
        c->line[c->line_len] = 0;
        c->line_len = 0;
        if (strncmp(c->line, "data: m", 7)) continue;
        long k = strtol(c->line + 7, NULL, 10);
        if (k == c->next_seq) c->got++;
        else c->bad++;
        c->next_seq = (int32_t)k + 1;
    }
}

static int64_t last_delivery_ns;
static long deliveries;

/* Advance one connection as far as it goes; 1 when a conn-mode exchange
 * has finished (the caller reuses the slot). */
static int drive(struct conn *c) {
    for (;;) switch (c->st) {
        case C_CONNECTING: {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) goto fail;
            c->st = opt_plain ? C_SEND : C_HANDSHAKE;
            break;
        }
        case C_HANDSHAKE: {
            int r = SSL_do_handshake(c->ssl);
            if (r != 1) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
                goto fail;
            }
            c->reused = SSL_session_reused(c->ssl);
            note_session(c);
            c->st = C_SEND;
            break;
        }
        case C_SEND: {
            int r = io(c, 1, request, request_len);
            if (r == -1) return 0;
            if (r != (int)request_len) goto fail; /* small: one piece or none */
            c->st = C_READ;
            break;
        }
        case C_READ: {
            int r = io(c, 0, c->buf + c->len, sizeof c->buf - 1 - c->len);
            if (r == -1) return 0;
            if (r <= 0) goto fail;
            c->len += r;
            int done = response_complete(c);
            if (done < 0) goto fail;
            if (!done) break;
            if (!strcmp(mode, "conn")) {
                done_n++;
                reused_n += c->reused;
                conn_close(c, 0);
                return 1;
            }
            established_n++;
            if (!strcmp(mode, "idle")) {
                c->st = C_IDLE;
                return 0;
            }
            char *body = strstr(c->buf, "\r\n\r\n") + 4;
            c->st = C_STREAM;
            sse_bytes(c, body, c->len - (body - c->buf));
            break;
        }
        case C_STREAM: {
            char chunk[4096];
            int r = io(c, 0, chunk, sizeof chunk);
            if (r == -1) return 0;
            if (r <= 0) {
                closed_n++;
                conn_close(c, 1);
                return 0;
            }
            int32_t before = c->got;
            sse_bytes(c, chunk, r);
            if (c->got != before) {
                deliveries += c->got - before;
                last_delivery_ns = now_ns();
            }
            break;
        }
        case C_IDLE:
            return 0; /* nothing is expected; an EOF is counted at the end */
        default:
            return 0;
    }
fail:
    fail_n++;
    if (fail_n <= 5) {
        fprintf(stderr, "tlsload: connection failed in state %d: ", c->st);
        ERR_print_errors_fp(stderr);
        fprintf(stderr, "(errno %s)\n", strerror(errno));
    }
    conn_close(c, 1);
    return 1;
}

static int pub_ready; /* the publisher's socket has something to read */

static void poll_once(int timeout_ms, int reopen) {
    struct epoll_event evs[512];
    int n = epoll_wait(epfd, evs, 512, timeout_ms);
    for (int i = 0; i < n; i++) {
        struct conn *c = evs[i].data.ptr;
        if (!c) pub_ready = 1;
        else if (drive(c) && reopen) conn_open(c);
    }
}

/* ------------------------------------------------------------ modes */

static void run_conn(void) {
    int64_t cpu0 = server_cpu_ns(), self0 = self_cpu_ns(), t0 = now_ns();
    int64_t end = t0 + (int64_t)opt_seconds * 1000000000;
    for (int i = 0; i < nconns; i++) conn_open(&conns[i]);
    while (now_ns() < end) poll_once(50, 1);
    int64_t t1 = now_ns(), cpu1 = server_cpu_ns(), self1 = self_cpu_ns();
    for (int i = 0; i < nconns; i++) conn_close(&conns[i], 1); /* mid-exchange ones */
    double s = (t1 - t0) / 1e9;
    printf("RESULT mode=conn resume=%d conns=%ld failed=%ld reused=%ld seconds=%.3f per_s=%.1f "
           "server_cpu_ms=%.1f server_cpu_us_per_conn=%.2f client_cpu_ms=%.1f proto=%s cipher=%s group=%s\n",
           opt_resume, done_n, fail_n, reused_n, s, done_n / s, (cpu1 - cpu0) / 1e6,
           done_n ? (cpu1 - cpu0) / 1e3 / done_n : 0, (self1 - self0) / 1e6, proto_seen, cipher_seen,
           group_seen);
}

/* Open all connections, at most --batch handshakes in flight. */
static void open_all(int64_t deadline) {
    int next = 0;
    while ((established_n + fail_n < nconns) && now_ns() < deadline) {
        while (next < nconns && next - established_n - fail_n < opt_batch) conn_open(&conns[next++]);
        poll_once(50, 0);
    }
}

static void run_idle(void) {
    /* The warm-up: one exchange on a connection of its own, so one-time
     * allocations are not charged to the idle connections. */
    struct conn *w = &conns[nconns];
    conn_open(w);
    int64_t deadline = now_ns() + 10 * 1000000000LL;
    while (w->st != C_IDLE && w->st != C_FREE && now_ns() < deadline) poll_once(50, 0);
    if (w->st != C_IDLE) die("warm-up request failed");
    conn_close(w, 1);
    established_n = 0;
    struct timespec settle = {0, 300000000};
    nanosleep(&settle, NULL);
    long before = server_rss_kb();
    int64_t t0 = now_ns();
    open_all(t0 + (int64_t)opt_timeout * 1000000000);
    double s = (now_ns() - t0) / 1e9;
    struct timespec one = {1, 0};
    nanosleep(&one, NULL);
    long after = server_rss_kb();
    long open_n = 0, closed = 0;
    for (int i = 0; i < nconns; i++) {
        if (conns[i].st != C_IDLE) continue;
        open_n++;
        char b;
        if (recv(conns[i].fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0) closed++;
    }
    printf("RESULT mode=idle before_kb=%ld after_kb=%ld open=%ld failed=%ld closed_by_server=%ld "
           "bytes_per_conn=%.0f seconds=%.2f proto=%s cipher=%s group=%s\n",
           before, after, open_n, fail_n, closed, open_n ? (after - before) * 1024.0 / open_n : 0, s, proto_seen,
           cipher_seen, group_seen);
}

/* The publisher: one plain keep-alive connection, in the same epoll set
 * (token NULL), so the subscribers' reads go on while it waits; each POST
 * goes out once the previous one is answered. */
static int pub_fd = -1;

static void publish(int k) {
    char req[256], body[32], in[4096];
    int blen = snprintf(body, sizeof body, "m%d", k);
    int n = snprintf(req, sizeof req,
                     "POST /pub/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     opt_channel, blen, body);
    if (write(pub_fd, req, n) != n) die("publish %d: write: %s", k, strerror(errno));
    size_t len = 0;
    for (;;) {
        if (!pub_ready) {
            poll_once(1000, 0);
            continue;
        }
        ssize_t r = recv(pub_fd, in + len, sizeof in - 1 - len, MSG_DONTWAIT);
        if (r == 0) die("publish %d: connection closed", k);
        if (r < 0) {
            if (errno != EAGAIN) die("publish %d: %s", k, strerror(errno));
            pub_ready = 0;
            continue;
        }
        len += r;
        in[len] = 0;
        char *end = strstr(in, "\r\n\r\n");
        if (!end) continue;
        if (strncmp(in + 9, "20", 2)) die("publish %d answered: %.40s", k, in);
        char *cl = strcasestr(in, "\r\ncontent-length:");
        size_t want = (size_t)(end + 4 - in) + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
        if (len >= want) return;
    }
}

static void run_sse(void) {
    int64_t t0 = now_ns();
    open_all(t0 + (int64_t)opt_timeout * 1000000000);
    double sub_s = (now_ns() - t0) / 1e9;
    if (established_n < nconns) printf("# only %ld of %d subscribed\n", established_n, nconns);
    struct timespec settle = {0, 200000000};
    nanosleep(&settle, NULL);
    struct sockaddr_in pa = addr;
    pa.sin_port = htons(opt_pub_port);
    pub_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(pub_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(pub_fd, (struct sockaddr *)&pa, sizeof pa) < 0) die("publisher connect: %s", strerror(errno));
    struct epoll_event pev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, pub_fd, &pev) < 0) die("epoll_ctl: %s", strerror(errno));
    long rss0 = server_rss_kb();
    int64_t cpu0 = server_cpu_ns(), self0 = self_cpu_ns(), p0 = now_ns();
    for (int k = 1; k <= opt_msgs; k++) publish(k);
    int64_t p1 = now_ns(), deadline = p1 + 30 * 1000000000LL;
    long expected = established_n * (long)opt_msgs;
    while (deliveries < expected && now_ns() < deadline) poll_once(20, 0);
    int64_t cpu1 = server_cpu_ns(), self1 = self_cpu_ns();
    long rss1 = server_rss_kb();
    long complete = 0, bad = 0;
    for (int i = 0; i < nconns; i++) {
        complete += conns[i].got == opt_msgs && !conns[i].bad;
        bad += conns[i].bad;
    }
    double burst = (last_delivery_ns > p0 ? last_delivery_ns - p0 : p1 - p0) / 1e9;
    printf("RESULT mode=sse subs=%d established=%ld msgs=%d deliveries=%ld expected=%ld complete=%ld "
           "out_of_order=%ld closed=%ld subscribe_s=%.2f publish_s=%.3f burst_s=%.3f deliveries_per_s=%.0f "
           "server_cpu_ms=%.1f server_cpu_us_per_delivery=%.3f client_cpu_ms=%.1f rss_subscribed_kb=%ld "
           "rss_after_kb=%ld proto=%s cipher=%s group=%s\n",
           nconns, established_n, opt_msgs, deliveries, expected, complete, bad, closed_n, sub_s,
           (p1 - p0) / 1e9, burst, deliveries / burst, (cpu1 - cpu0) / 1e6,
           deliveries ? (cpu1 - cpu0) / 1e3 / deliveries : 0, (self1 - self0) / 1e6, rss0, rss1, proto_seen,
           cipher_seen, group_seen);
    close(pub_fd);
}

int main(int argc, char **argv) {
    if (argc < 2) die("usage: tlsload conn|idle|sse --port P [--ca CA] [options] (see the source)");
    mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--plain")) { opt_plain = 1; continue; }
        if (!strcmp(a, "--resume")) { opt_resume = 1; continue; }
        if (!v) die("%s needs a value", a);
        i++;
        if (!strcmp(a, "--port")) opt_port = atoi(v);
        else if (!strcmp(a, "--pub-port")) opt_pub_port = atoi(v);
        else if (!strcmp(a, "--ca")) opt_ca = v;
        else if (!strcmp(a, "--path")) opt_path = v;
        else if (!strcmp(a, "--channel")) opt_channel = v;
        else if (!strcmp(a, "--conns") || !strcmp(a, "--subs")) opt_conns = opt_subs = atoi(v);
        else if (!strcmp(a, "--seconds")) opt_seconds = atoi(v);
        else if (!strcmp(a, "--msgs")) opt_msgs = atoi(v);
        else if (!strcmp(a, "--batch")) opt_batch = atoi(v);
        else if (!strcmp(a, "--timeout")) opt_timeout = atoi(v);
        else if (!strcmp(a, "--pids")) {
            for (char *p = strtok(strdup(v), ","); p && npids < 16; p = strtok(NULL, ",")) pids[npids++] = atoi(p);
        } else die("unknown option %s", a);
    }
    if (strcmp(mode, "conn") && strcmp(mode, "idle") && strcmp(mode, "sse")) die("unknown mode %s", mode);
    if (opt_port <= 0) die("--port is required");
    if (!strcmp(mode, "sse") && opt_pub_port <= 0) die("sse needs --pub-port");
    if (!opt_plain && !opt_ca) die("--ca is required (or --plain)");
    nconns = opt_conns;

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < nconns + 64) die("open-file limit %ld is too low", (long)rl.rlim_cur);

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(opt_port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!strcmp(mode, "sse"))
        request_len = snprintf(request, sizeof request,
                               "GET /sub/%s HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
                               opt_channel);
    else
        request_len = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n", opt_path,
                               strcmp(mode, "conn") ? "" : "Connection: close\r\n");

    if (!opt_plain) {
        /* OpenSSL's defaults (TLS 1.3 first, its cipher and group order),
         * the test CA verified, ALPN http/1.1 as a browser offers it. */
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx || SSL_CTX_load_verify_locations(ctx, opt_ca, NULL) != 1) die("cannot load CA %s", opt_ca);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        static const unsigned char alpn[] = "\x08http/1.1";
        SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    }
    conns = calloc(nconns + 1, sizeof *conns);
    if (!conns) die("out of memory");
    epfd = epoll_create1(EPOLL_CLOEXEC);

    if (!strcmp(mode, "conn")) run_conn();
    else if (!strcmp(mode, "idle")) run_idle();
    else run_sse();
    fflush(stdout);
    for (int i = 0; i <= nconns; i++) conn_close(&conns[i], 1);
    return fail_n > nconns / 100 ? 2 : 0;
}
