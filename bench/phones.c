/* phones: N phones each holding one Ping through the gateway, for the storm
 * bench (bench/phones.py builds and drives it; bench/README.md "Held Pings").
 *
 * Approach. The Python load generators cost more CPU than the gateway in a
 * storm, and wrk keeps no TLS session across its start, so neither can show
 * a storm of phones that resume their TLS sessions, as phones' TLS stacks do
 * after a blip. This is a phone fleet in C: one thread, non-blocking sockets,
 * epoll, OpenSSL. Each phone has its own connection, its own request (read
 * from PREFIX.bin at the offsets of PREFIX.idx, as bench/wrkgen.py writes
 * them) and, with RESUME=1, its own saved session: the last ticket its
 * connection received (TLS 1.3 sends tickets after the handshake; a held
 * connection reads them while it waits). A phone whose connection fails,
 * or is closed before an answer, tries again after 0.5-1.5 s, as a phone does.
 *
 * Usage: phones HOST PORT PREFIX RATE TLS RESUME
 * Commands, one JSON line each on stdin (only the command's name is read):
 *   {"cmd": "ramp"}   open the phones' connections, RATE new ones a second;
 *                     {"event": "sent", ...} once every phone's Ping is sent;
 *   {"cmd": "storm"}  drop every connection at once, open them all again at
 *                     once; {"event": "stormed", ...} at once;
 *   {"cmd": "stop"}   {"event": "result", ...}: this phase's counts; exit.
 * Counts (resumed, retries, errors) are of the phase since the last command.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum state { IDLE, WAITING, CONNECTING, HANDSHAKING, SENDING, HELD };
enum error { E_SOCKET, E_CONNECT, E_HANDSHAKE, E_WRITE, E_CLOSED, E_COUNT };
static const char *ERROR_NAMES[E_COUNT] = {"socket", "connect", "handshake", "write",
                                           "closed before an answer"};

typedef struct {
    int fd;
    SSL *ssl;
    SSL_SESSION *session; /* the last ticket received: offered on reconnect */
    enum state state;
    uint32_t events; /* what epoll watches for it */
    int answered;
    size_t off, len, pos; /* the request in data */
    double retry_at;
} phone;

static phone *phones;
static size_t n;
static char *data;
static SSL_CTX *ctx;
static int epfd, use_tls, resume;
static struct sockaddr_storage addr;
static socklen_t addrlen;

/* this phase's counts */
static size_t sent, resumed, retries, answered, waiting;
static size_t errors[E_COUNT];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) {
    printf("{\"event\": \"error\", \"message\": \"phones: %s: %s\"}\n", what, strerror(errno));
    fflush(stdout);
    exit(1);
}

static void watch(phone *p, uint32_t events) {
    if (p->events == events) return;
    p->events = events;
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(p - phones)};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, p->fd, &ev) < 0) die("epoll_ctl");
}

static void hang_up(phone *p) {
    /* Marked as shut down (nothing is sent): OpenSSL would otherwise take a
       connection that ends without close_notify as a bad session and make
       its ticket unresumable; a phone's TLS stack keeps it after a blip. */
    if (p->ssl != NULL) SSL_set_shutdown(p->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    if (p->ssl != NULL) SSL_free(p->ssl);
    p->ssl = NULL;
    if (p->fd >= 0) close(p->fd); /* no close_notify: the phone is simply gone */
    p->fd = -1;
    p->state = IDLE;
}

/* A failed attempt: counted, tried again after 0.5-1.5 s. */
static void fail(phone *p, enum error e) {
    errors[e]++;
    hang_up(p);
    p->state = WAITING;
    p->retry_at = now() + 0.5 + (double)rand() / RAND_MAX;
    retries++;
    waiting++;
}

static void dial(phone *p) {
    p->pos = 0;
    p->answered = 0;
    p->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) {
        fail(p, E_SOCKET);
        return;
    }
    int one = 1;
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    p->state = CONNECTING;
    p->events = EPOLLOUT;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)(p - phones)};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, p->fd, &ev) < 0) die("epoll_ctl");
    if (connect(p->fd, (struct sockaddr *)&addr, addrlen) < 0 && errno != EINPROGRESS)
        fail(p, E_CONNECT);
}

/* An OpenSSL call's outcome: 1 done, 0 waiting (watched), -1 failed. */
static int tls_wait(phone *p, int r) {
    switch (SSL_get_error(p->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        watch(p, EPOLLIN);
        return 0;
    case SSL_ERROR_WANT_WRITE:
        watch(p, EPOLLOUT);
        return 0;
    default:
        ERR_clear_error();
        return -1;
    }
}

static void step(phone *p) {
    if (p->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            fail(p, E_CONNECT);
            return;
        }
        p->state = SENDING;
        if (use_tls) {
            p->ssl = SSL_new(ctx);
            if (p->ssl == NULL) die("SSL_new");
            SSL_set_fd(p->ssl, p->fd);
            SSL_set_app_data(p->ssl, p);
            if (resume && p->session != NULL) SSL_set_session(p->ssl, p->session);
            p->state = HANDSHAKING;
        }
    }
    if (p->state == HANDSHAKING) {
        int r = SSL_connect(p->ssl);
        if (r != 1) {
            if (tls_wait(p, r) < 0) fail(p, E_HANDSHAKE);
            return;
        }
        if (SSL_session_reused(p->ssl)) resumed++;
        p->state = SENDING;
    }
    if (p->state == SENDING) {
        while (p->pos < p->len) {
            const char *at = data + p->off + p->pos;
            int left = (int)(p->len - p->pos);
            if (use_tls) {
                int r = SSL_write(p->ssl, at, left);
                if (r <= 0) {
                    if (tls_wait(p, r) < 0) fail(p, E_WRITE);
                    return;
                }
                p->pos += (size_t)r;
            } else {
                ssize_t r = write(p->fd, at, (size_t)left);
                if (r < 0) {
                    if (errno == EAGAIN) {
                        watch(p, EPOLLOUT);
                        return;
                    }
                    fail(p, E_WRITE);
                    return;
                }
                p->pos += (size_t)r;
            }
        }
        p->state = HELD;
        sent++;
        watch(p, EPOLLIN);
        return; /* nothing to read yet: epoll says when */
    }
    if (p->state == HELD) { /* session tickets, an answer, or the end */
        char buf[16384];
        for (;;) {
            int closed = 0;
            if (use_tls) {
                int r = SSL_read(p->ssl, buf, sizeof buf);
                if (r > 0) {
                    if (!p->answered) answered++;
                    p->answered = 1;
                    continue;
                }
                if (tls_wait(p, r) == 0) return;
                closed = 1;
            } else {
                ssize_t r = read(p->fd, buf, sizeof buf);
                if (r > 0) {
                    if (!p->answered) answered++;
                    p->answered = 1;
                    continue;
                }
                if (r < 0 && errno == EAGAIN) return;
                closed = 1;
            }
            if (closed) {
                if (p->answered) {
                    hang_up(p); /* answered, then closed: this phone is done */
                } else {
                    sent--; /* it must be sent again */
                    fail(p, E_CLOSED);
                }
                return;
            }
        }
    }
}

static int new_session(SSL *ssl, SSL_SESSION *session) {
    phone *p = SSL_get_app_data(ssl);
    if (p->session != NULL) SSL_SESSION_free(p->session);
    p->session = session;
    return 1; /* the reference is kept */
}

static void load(const char *prefix) {
    char path[4096];
    snprintf(path, sizeof path, "%s.bin", prefix);
    FILE *f = fopen(path, "rb");
    if (f == NULL) die(path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)size + 1);
    if (data == NULL || fread(data, 1, (size_t)size, f) != (size_t)size) die("read requests");
    fclose(f);
    snprintf(path, sizeof path, "%s.idx", prefix);
    f = fopen(path, "r");
    if (f == NULL) die(path);
    size_t cap = 1024;
    phones = calloc(cap, sizeof *phones);
    unsigned long off, len;
    while (fscanf(f, "%lu %lu", &off, &len) == 2) {
        if (off + len > (unsigned long)size) {
            errno = EINVAL;
            die("an offset past the requests");
        }
        if (n == cap) {
            cap *= 2;
            phones = realloc(phones, cap * sizeof *phones);
            if (phones == NULL) die("realloc");
        }
        phones[n] = (phone){.fd = -1, .off = off, .len = len};
        n++;
    }
    fclose(f);
}

static void report(const char *event, double seconds) {
    size_t failed = 0, tickets = 0;
    for (int e = 0; e < E_COUNT; e++) failed += errors[e];
    for (size_t i = 0; i < n; i++) tickets += phones[i].session != NULL;
    printf("{\"event\": \"%s\", \"seconds\": %.6f, \"phones\": %zu, \"sent\": %zu, "
           "\"tickets\": %zu, \"resumed\": %zu, \"retries\": %zu, \"answered\": %zu, "
           "\"connect_errors\": %zu, \"errors\": {",
           event, seconds, n, sent, tickets, resumed, retries, answered, failed);
    int first = 1;
    for (int e = 0; e < E_COUNT; e++) {
        if (errors[e] == 0) continue;
        printf("%s\"%s\": %zu", first ? "" : ", ", ERROR_NAMES[e], errors[e]);
        first = 0;
    }
    printf("}}\n");
    fflush(stdout);
}

static void new_phase(void) {
    resumed = retries = answered = 0;
    memset(errors, 0, sizeof errors);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: phones HOST PORT PREFIX RATE TLS RESUME\n");
        return 2;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(argv[1], argv[2], &hints, &ai) != 0) die("getaddrinfo");
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    load(argv[3]);
    double rate = atof(argv[4]);
    use_tls = atoi(argv[5]);
    resume = atoi(argv[6]);
    if (rate <= 0) rate = 1e9;
    srand((unsigned)getpid());
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    if (use_tls) {
        ctx = SSL_CTX_new(TLS_client_method());
        if (ctx == NULL) die("SSL_CTX_new");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* the bench's own certificate */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, new_session);
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev) < 0) die("epoll_ctl stdin");

    printf("{\"event\": \"ready\", \"phones\": %zu}\n", n);
    fflush(stdout);
    char line[4096];
    size_t have = 0, ramped = n; /* phones opened by the ramp so far */
    double t0 = 0;
    int phase = 0; /* 0 idle, 1 ramp, 2 storm: "sent" is told once per ramp */
    struct epoll_event events[512];
    for (;;) {
        int timeout = 200;
        double t = now();
        if (ramped < n) {
            size_t due = (size_t)((t - t0) * rate) + 1;
            while (ramped < n && ramped < due) dial(&phones[ramped++]);
            timeout = 2;
        }
        if (waiting > 0) {
            waiting = 0;
            for (size_t i = 0; i < n; i++) {
                phone *p = &phones[i];
                if (p->state != WAITING) continue;
                if (p->retry_at <= t) {
                    p->state = IDLE;
                    dial(p);
                } else {
                    waiting++;
                }
            }
            /* dial may have failed again at once: those count as waiting too */
            if (waiting > 0 && timeout > 20) timeout = 20;
        }
        if (phase == 1 && ramped == n && sent == n) {
            report("sent", now() - t0);
            phase = 0;
        }
        int k = epoll_wait(epfd, events, 512, timeout);
        if (k < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        int commands = 0;
        for (int i = 0; i < k; i++) {
            uint32_t at = events[i].data.u32;
            if (at != UINT32_MAX) {
                step(&phones[at]);
                continue;
            }
            ssize_t r = read(0, line + have, sizeof line - 1 - have);
            if (r <= 0) return 0; /* the bench has gone */
            have += (size_t)r;
            line[have] = '\0';
            commands = 1;
        }
        /* Commands after the batch: a storm redials every phone, and an event
           of this batch for a phone's old connection must not reach its new one. */
        char *end;
        while (commands && (end = strchr(line, '\n')) != NULL) {
            *end = '\0';
            if (strstr(line, "\"ramp\"") != NULL) {
                new_phase();
                t0 = now();
                ramped = 0;
                phase = 1;
            } else if (strstr(line, "\"storm\"") != NULL) {
                double s0 = now();
                /* whatever a held connection has received is read first: a
                   ticket that arrived is kept however late this process ran */
                for (size_t j = 0; j < n; j++)
                    if (phones[j].state == HELD) step(&phones[j]);
                for (size_t j = 0; j < n; j++) hang_up(&phones[j]);
                new_phase();
                sent = 0;
                waiting = 0;
                for (size_t j = 0; j < n; j++) dial(&phones[j]);
                report("stormed", now() - s0);
            } else if (strstr(line, "\"stop\"") != NULL) {
                report("result", 0.0);
                return 0;
            }
            size_t used = (size_t)(end - line) + 1;
            memmove(line, end + 1, have - used + 1);
            have -= used;
        }
        if (have == sizeof line - 1) have = 0; /* an overlong line: dropped */
    }
}
