#define _GNU_SOURCE
/* greedy: the load generator of bench/fairness.sh.  One epoll loop, one
 * thread, two kinds of HTTP/1.1 keep-alive connections to the same URL:
 *
 *   ordinary (-n N)  one request at a time: send, wait for the whole
 *                    response, record its latency, send the next one;
 *   greedy   (-g G)  a deep pipeline: whenever fewer than DEPTH requests
 *                    are outstanding, write another BATCH of them in one go,
 *                    and read the answers with 256 KiB reads.
 *
 * It is written in C so that the client core stays below saturation and
 * the server core is the bottleneck: how the server shares its time is then
 * what the figures show.  Responses are parsed (status line, Content-Length,
 * Connection: close), so servers with different headers are counted the
 * same way.  A connection the server closes (its keep-alive request cap,
 * say) is reopened at once and counted as a reconnect; requests it had
 * pipelined and that were never answered are simply lost.
 *
 * The run lasts WARMUP + DURATION seconds; only responses received in the
 * last DURATION seconds are counted and timed.
 *
 * Build: cc -O2 -o greedy greedy.c
 * Run:   greedy -p PORT [-a 127.0.0.1] [-u /hello.txt] [-n 50] [-g 4]
 *               [-d 5] [-w 1] [-D 1024] [-b 256]
 *        (-g defaults to $GREEDY_CONNS, else 4; -g 0 runs ordinary clients only)
 * Output (one line each, parsed by fairness.sh):
 *   RESULT requests= duration_us= p50_us= p90_us= p99_us= p999_us= max_us=
 *          errors= reconnects=          ordinary clients, latency in us
 *   COUNTS c1,c2,...                    responses per ordinary client
 *   GREEDY responses= duration_us= errors= reconnects= conns= depth= batch=
 *   GCOUNTS g1,g2,...                   responses per greedy connection
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ORDINARY, GREEDY };
#define HDR_MAX 8192
#define HIST_US 1000000 /* 1 us buckets up to 1 s, then one overflow bucket */

struct conn {
  int fd, kind;
  /* response parser */
  char hdr[HDR_MAX];
  size_t hlen;     /* bytes of an incomplete head carried between reads */
  int in_body;     /* skipping a body of body_left more bytes */
  long body_left;
  int status;      /* of the response being read */
  int close_after; /* the response being read carries Connection: close */
  int closing;     /* a Connection: close response was completed */
  /* ordinary */
  uint64_t t_sent;
  /* greedy */
  uint64_t outstanding; /* requests written or being written, not yet answered */
  size_t wpend;         /* bytes of the current batch not yet written */
  int want_out;
  /* within the measured window */
  uint64_t count, errors, reconnects;
};

static struct sockaddr_in addr;
static int ep;
static char req[1024];
static size_t req_len;
static char *batch_buf;
static size_t batch_len;
static int batch_n = 256;
static uint64_t depth = 1024;
static uint64_t win_start, win_end, now_ns;
static uint32_t *hist;
static uint64_t hist_over, lat_max;
static char rbuf[256 * 1024];

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int in_window(void) { return now_ns >= win_start && now_ns < win_end; }

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void open_conn(struct conn *c) {
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  if (fd < 0) die("socket");
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
  c->fd = fd;
  c->hlen = 0;
  c->in_body = 0;
  c->body_left = 0;
  c->close_after = 0;
  c->closing = 0;
  c->outstanding = 0;
  c->wpend = 0;
  c->want_out = 0;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
}

static void set_out(struct conn *c, int want) {
  if (c->want_out == want) return;
  c->want_out = want;
  struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
}

static void send_ordinary(struct conn *c);
static void fill_greedy(struct conn *c);

/* Close and reopen; `expected` is false when the server dropped us without
 * announcing Connection: close (counted as an error). */
static void reconnect(struct conn *c, int expected) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  if (in_window()) {
    c->reconnects++;
    if (!expected) c->errors++;
  }
  open_conn(c);
  if (c->kind == ORDINARY)
    send_ordinary(c);
  else
    fill_greedy(c);
}

static void send_ordinary(struct conn *c) {
  c->t_sent = mono_ns();
  ssize_t n = write(c->fd, req, req_len);
  /* A small write to a connection with nothing in flight: it either fits
   * or the connection is broken, and then the read side reconnects. */
  if (n >= 0 && n != (ssize_t)req_len) {
    fprintf(stderr, "greedy: short write on an ordinary connection\n");
    exit(1);
  }
}

static void fill_greedy(struct conn *c) {
  for (;;) {
    if (c->wpend == 0) {
      if (c->outstanding >= depth) break;
      c->wpend = batch_len;
      c->outstanding += batch_n;
    }
    ssize_t n = write(c->fd, batch_buf + (batch_len - c->wpend), c->wpend);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return; /* the read side sees the error or EOF and reconnects */
    }
    c->wpend -= (size_t)n;
  }
  set_out(c, c->wpend > 0);
}

/* A complete response arrived on c. */
static void on_response(struct conn *c, int status) {
  int counted = in_window();
  if (status != 200 && counted) c->errors++;
  if (c->kind == ORDINARY) {
    uint64_t t = mono_ns();
    now_ns = t;
    if (counted) {
      uint64_t us = (t - c->t_sent) / 1000;
      if (us < HIST_US)
        hist[us]++;
      else
        hist_over++;
      if (us > lat_max) lat_max = us;
      c->count++;
    }
    if (!c->close_after) send_ordinary(c);
  } else {
    if (counted) c->count++;
    if (c->outstanding) c->outstanding--;
  }
  if (c->close_after) c->closing = 1;
}

/* Parse one complete head of len bytes (ending in CRLF CRLF). */
static int parse_head(struct conn *c, const char *h, size_t len) {
  if (len < 12 || memcmp(h, "HTTP/1.", 7) != 0) return -1;
  c->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
  long clen = -1;
  c->close_after = 0;
  const char *p = h, *end = h + len;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) break;
    const char *line = p;
    size_t ll = (size_t)(eol - p);
    p = eol + 1;
    if (ll > 15 && strncasecmp(line, "Content-Length:", 15) == 0) {
      clen = strtol(line + 15, NULL, 10);
    } else if (ll > 11 && strncasecmp(line, "Connection:", 11) == 0) {
      const char *v = line + 11;
      while (*v == ' ') v++;
      if (strncasecmp(v, "close", 5) == 0) c->close_after = 1;
    }
  }
  if (clen < 0) clen = (c->status == 204 || c->status == 304) ? 0 : -1;
  if (clen < 0) return -1; /* no chunked or close-delimited bodies here */
  c->body_left = clen;
  return 0;
}

/* Consume n bytes read from c.  Returns -1 on a protocol error.  Stops
 * early after a Connection: close response. */
static int consume(struct conn *c, const char *b, size_t n) {
  size_t i = 0;
  while (i < n && !c->closing) {
    if (c->in_body) {
      size_t k = n - i < (size_t)c->body_left ? n - i : (size_t)c->body_left;
      c->body_left -= (long)k;
      i += k;
      if (c->body_left == 0) {
        c->in_body = 0;
        on_response(c, c->status);
      }
      continue;
    }
    /* looking for the end of a head; hlen bytes of it may be held in hdr */
    const char *head;
    size_t hl;
    if (c->hlen == 0) {
      const char *e = memmem(b + i, n - i, "\r\n\r\n", 4);
      if (!e) {
        if (n - i > HDR_MAX) return -1;
        memcpy(c->hdr, b + i, n - i);
        c->hlen = n - i;
        return 0;
      }
      head = b + i;
      hl = (size_t)(e - head) + 4;
      i += hl;
    } else {
      size_t have = c->hlen;
      size_t take = n - i < HDR_MAX - have ? n - i : HDR_MAX - have;
      memcpy(c->hdr + have, b + i, take);
      size_t from = have > 3 ? have - 3 : 0;
      const char *e = memmem(c->hdr + from, have + take - from, "\r\n\r\n", 4);
      if (!e) {
        if (have + take >= HDR_MAX) return -1;
        c->hlen = have + take;
        return 0;
      }
      head = c->hdr;
      hl = (size_t)(e - c->hdr) + 4;
      i += hl - have;
      c->hlen = 0;
    }
    if (parse_head(c, head, hl) < 0) return -1;
    if (c->body_left == 0)
      on_response(c, c->status);
    else
      c->in_body = 1;
  }
  return 0;
}

static void on_readable(struct conn *c) {
  size_t cap = c->kind == GREEDY ? sizeof rbuf : 16384;
  ssize_t n = read(c->fd, rbuf, cap);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    reconnect(c, c->closing);
    return;
  }
  if (n == 0) {
    reconnect(c, c->closing);
    return;
  }
  if (consume(c, rbuf, (size_t)n) < 0) {
    if (in_window()) c->errors++;
    reconnect(c, 1);
    return;
  }
  if (c->closing) {
    reconnect(c, 1); /* do not wait for the server's FIN */
    return;
  }
  if (c->kind == GREEDY) fill_greedy(c);
}

static uint64_t pct(uint64_t total, double q) {
  if (!total) return 0;
  uint64_t want = (uint64_t)(q * (double)total);
  if (want >= total) want = total - 1;
  uint64_t seen = 0;
  for (uint64_t us = 0; us < HIST_US; us++) {
    seen += hist[us];
    if (seen > want) return us;
  }
  return lat_max;
}

static void usage(void) {
  fprintf(stderr, "usage: greedy -p PORT [-a ADDR] [-u PATH] [-n ORDINARY] [-g GREEDY] "
                  "[-d SECS] [-w WARMUP_SECS] [-D DEPTH] [-b BATCH]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *path = "/hello.txt", *e;
  int port = 0, n_ord = 50, n_greedy = 4;
  double dur = 5, warm = 1;
  if ((e = getenv("GREEDY_CONNS")) && *e) n_greedy = atoi(e);
  int o;
  while ((o = getopt(argc, argv, "a:p:u:n:g:d:w:D:b:")) != -1) {
    switch (o) {
    case 'a': host = optarg; break;
    case 'p': port = atoi(optarg); break;
    case 'u': path = optarg; break;
    case 'n': n_ord = atoi(optarg); break;
    case 'g': n_greedy = atoi(optarg); break;
    case 'd': dur = atof(optarg); break;
    case 'w': warm = atof(optarg); break;
    case 'D': depth = strtoull(optarg, NULL, 10); break;
    case 'b': batch_n = atoi(optarg); break;
    default: usage();
    }
  }
  if (port <= 0 || n_ord < 0 || n_greedy < 0 || n_ord + n_greedy == 0 || dur <= 0 || warm < 0 ||
      batch_n <= 0 || depth == 0)
    usage();
  signal(SIGPIPE, SIG_IGN); /* a closed connection shows up as EPIPE, then EOF */
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) usage();

  req_len = (size_t)snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path, host, port);
  batch_len = req_len * (size_t)batch_n;
  batch_buf = malloc(batch_len);
  hist = calloc(HIST_US, sizeof *hist);
  if (!batch_buf || !hist) die("malloc");
  for (int i = 0; i < batch_n; i++) memcpy(batch_buf + (size_t)i * req_len, req, req_len);

  ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  int total = n_ord + n_greedy;
  struct conn *conns = calloc((size_t)total, sizeof *conns);
  if (!conns) die("calloc");
  for (int i = 0; i < total; i++) {
    conns[i].kind = i < n_ord ? ORDINARY : GREEDY;
    open_conn(&conns[i]);
  }
  now_ns = mono_ns();
  win_start = now_ns + (uint64_t)(warm * 1e9);
  win_end = win_start + (uint64_t)(dur * 1e9);
  /* ordinary clients first, so they are in flight before the pipelines fill */
  for (int i = 0; i < total; i++) {
    if (conns[i].kind == ORDINARY)
      send_ordinary(&conns[i]);
    else
      fill_greedy(&conns[i]);
  }

  struct epoll_event evs[256];
  while (now_ns < win_end) {
    int k = epoll_wait(ep, evs, 256, 10);
    now_ns = mono_ns();
    if (k < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    /* Ordinary connections first, so the client adds as little as it can
     * to their latency; then the greedy ones (one read of up to 256 KiB
     * each per wakeup, level-triggered, so the rest comes next time). */
    for (int pass = ORDINARY; pass <= GREEDY; pass++) {
      for (int i = 0; i < k; i++) {
        struct conn *c = evs[i].data.ptr;
        if (c->kind != pass) continue;
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
          on_readable(c);
        else if (evs[i].events & EPOLLOUT)
          fill_greedy(c);
      }
    }
  }

  uint64_t dur_us = (uint64_t)(dur * 1e6);
  uint64_t oreq = 0, oerr = 0, orec = 0, greq = 0, gerr = 0, grec = 0;
  for (int i = 0; i < total; i++) {
    if (conns[i].kind == ORDINARY) {
      oreq += conns[i].count, oerr += conns[i].errors, orec += conns[i].reconnects;
    } else {
      greq += conns[i].count, gerr += conns[i].errors, grec += conns[i].reconnects;
    }
  }
  if (n_ord) {
    uint64_t timed = oreq; /* every counted ordinary response was timed */
    printf("RESULT requests=%llu duration_us=%llu p50_us=%llu p90_us=%llu p99_us=%llu p999_us=%llu "
           "max_us=%llu errors=%llu reconnects=%llu\n",
           (unsigned long long)oreq, (unsigned long long)dur_us, (unsigned long long)pct(timed, 0.50),
           (unsigned long long)pct(timed, 0.90), (unsigned long long)pct(timed, 0.99),
           (unsigned long long)pct(timed, 0.999), (unsigned long long)lat_max, (unsigned long long)oerr,
           (unsigned long long)orec);
    printf("COUNTS ");
    for (int i = 0; i < n_ord; i++) printf("%s%llu", i ? "," : "", (unsigned long long)conns[i].count);
    printf("\n");
  }
  if (n_greedy) {
    printf("GREEDY responses=%llu duration_us=%llu errors=%llu reconnects=%llu conns=%d depth=%llu batch=%d\n",
           (unsigned long long)greq, (unsigned long long)dur_us, (unsigned long long)gerr,
           (unsigned long long)grec, n_greedy, (unsigned long long)depth, batch_n);
    printf("GCOUNTS ");
    for (int i = n_ord; i < total; i++) printf("%s%llu", i > n_ord ? "," : "", (unsigned long long)conns[i].count);
    printf("\n");
  }
  return 0;
}
