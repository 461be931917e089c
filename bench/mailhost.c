/* mailhost: a mail server in C that holds Pings, for the storm bench
 * (bench/mailhost.py builds and drives it; bench/README.md "Held Pings").
 *
 * Approach. In a reconnect storm the demo backend (Python, aiohttp) shares
 * the bench machine's two cores with the gateway and the phones, and took
 * 3-5 CPU-s of a 10,000-Ping storm: work a mail server does on its own
 * machine. This is a backend that costs next to nothing, as the issue's own
 * measurement put nginx behind the gateway: one thread, non-blocking sockets,
 * epoll, HTTP/1.1 with keep-alive, no TLS, no authentication. What it
 * answers is given to it as whole HTTP responses (Python builds them, see
 * bench/mailhost.py), so it knows nothing of EAS but how to tell a Ping:
 *
 *   OPTIONS            PREFIX.options at once;
 *   POST, a Ping body  held; PREFIX.ping after HOLD seconds (a Ping's
 *                      heartbeat expiring); a connection closed while held
 *                      is closed here too;
 *   POST, other body   PREFIX.other at once;
 *   POST ...?Cmd=NAME  PREFIX.cmd.NAME at once, when NAME is one of CMDS (even
 *                      a Ping: throughput's mix wants its Ping answered);
 *   anything else      400 and the connection closed (another method, a
 *                      chunked body, a head over 16 KiB, a body over 1 MiB).
 *
 * A Ping body is a WBXML document whose first tag is Ping in code page 13
 * (header, no string table, SWITCH_PAGE 13, Ping with content: 00 0D 45).
 *
 * Usage: mailhost HOSTS PORT PREFIX HOLD [CMDS]
 *   CMDS: comma-separated command names with an answer of their own
 *   (bench/mailhost.py records them from the demo backend for throughput).
 *   HOSTS: comma-separated addresses, one listener each on the same PORT
 *   (0: the kernel's choice for the first, then the same for the others).
 * It prints {"event": "ready", "port": N} once it listens. Commands, one JSON
 * line each on stdin (only the command's name is read):
 *   {"cmd": "counts"}  {"event": "counts", ...}: what it has served so far.
 * It exits when stdin closes or on SIGTERM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEAD 16384
#define MAX_BODY (1 << 20)
#define MAX_LISTENERS 16
#define MAX_COMMANDS 32
#define STDIN_TAG (-1)

typedef struct {
    char *buf;
    size_t len, cap;
    const char *out; /* the answer being written, and how much is left */
    size_t out_len;
    int held, close_after, draining;
    uint32_t gen;    /* bumped when the descriptor is closed: stale hold entries */
    uint32_t events; /* what epoll watches for it */
} conn;

typedef struct {
    int fd;
    uint32_t gen;
    double due;
} hold_entry;

typedef struct {
    const char *data;
    size_t len;
} blob;

static conn *conns;
static size_t nconns;
static int epfd;
static int listeners[MAX_LISTENERS];
static int nlisteners;
static blob options_answer, ping_answer, other_answer;
static struct {
    char name[64];
    blob answer;
} commands[MAX_COMMANDS];
static size_t ncommands;
static double hold_s;

/* the held Pings, in the order they are due (every hold is HOLD seconds) */
static hold_entry *holds;
static size_t hold_head, hold_tail, hold_cap;

static size_t accepted, held_now, pings, pings_answered, others, options, bad, closed_held;
static size_t by_command;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) {
    printf("{\"event\": \"error\", \"message\": \"mailhost: %s: %s\"}\n", what, strerror(errno));
    fflush(stdout);
    exit(1);
}

static blob load(const char *prefix, const char *suffix) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", prefix, suffix);
    FILE *f = fopen(path, "rb");
    if (f == NULL) die(path);
    if (fseek(f, 0, SEEK_END) != 0) die(path);
    long size = ftell(f);
    if (size <= 0) die(path);
    rewind(f);
    char *data = malloc((size_t)size);
    if (data == NULL || fread(data, 1, (size_t)size, f) != (size_t)size) die(path);
    fclose(f);
    return (blob){data, (size_t)size};
}

static void watch(int fd, conn *c, uint32_t events) {
    if (c->events == events) return;
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) != 0) die("epoll_ctl");
    c->events = events;
}

static void hang_up(int fd) {
    conn *c = &conns[fd];
    if (c->held) {
        c->held = 0;
        held_now--;
        closed_held++;
    }
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
    c->out = NULL;
    c->out_len = 0;
    c->close_after = 0;
    c->draining = 0;
    c->events = 0;
    c->gen++;
    close(fd); /* also leaves the epoll set */
}

/* Write what is left of the answer; 0 when the connection was closed or is
 * closing (its last answer written, it is read until the peer closes). */
static int flush_out(int fd) {
    conn *c = &conns[fd];
    while (c->out_len > 0) {
        ssize_t w = send(fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                watch(fd, c, EPOLLIN | EPOLLOUT);
                return 1;
            }
            hang_up(fd);
            return 0;
        }
        c->out += w;
        c->out_len -= (size_t)w;
    }
    if (c->close_after) { /* a lingering close: what the peer still sends is read, not reset */
        shutdown(fd, SHUT_WR);
        c->draining = 1;
        c->len = 0;
        watch(fd, c, EPOLLIN);
        return 0;
    }
    watch(fd, c, EPOLLIN);
    return 1;
}

static int answer(int fd, const blob *b) {
    conn *c = &conns[fd];
    c->out = b->data;
    c->out_len = b->len;
    return flush_out(fd);
}

static void refuse(int fd) {
    static blob bad_request = {
        "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 0};
    if (bad_request.len == 0) bad_request.len = strlen(bad_request.data);
    bad++;
    conns[fd].close_after = 1;
    answer(fd, &bad_request);
}

static void hold(int fd) {
    if (hold_tail == hold_cap) { /* grow the ring (kept linear: compact first) */
        size_t live = hold_tail - hold_head;
        if (hold_head > 0 && live < hold_cap / 2) {
            memmove(holds, holds + hold_head, live * sizeof *holds);
        } else {
            hold_cap = hold_cap ? 2 * hold_cap : 1024;
            holds = realloc(holds, hold_cap * sizeof *holds);
            if (holds == NULL) die("realloc");
            if (hold_head > 0) memmove(holds, holds + hold_head, live * sizeof *holds);
        }
        hold_head = 0;
        hold_tail = live;
    }
    conns[fd].held = 1;
    held_now++;
    pings++;
    holds[hold_tail++] = (hold_entry){fd, conns[fd].gen, now() + hold_s};
}

/* Where the value of header NAME starts when the line names it, else NULL. */
static const char *header_value(const char *line, const char *end, const char *name) {
    size_t n = strlen(name);
    if ((size_t)(end - line) <= n || strncasecmp(line, name, n) != 0 || line[n] != ':') return NULL;
    const char *v = line + n + 1;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    return v;
}

/* The answer of its own for the command the request line names (Cmd=NAME in
 * the query), or NULL. LINE_END: the end of the request line. */
static const blob *command_answer(const char *line, const char *line_end) {
    if (ncommands == 0) return NULL;
    const char *q = memchr(line, '?', (size_t)(line_end - line));
    while (q != NULL && q < line_end) {
        const char *field = q + 1;
        const char *stop = field;
        while (stop < line_end && *stop != '&' && *stop != ' ') stop++;
        if (stop - field > 4 && strncmp(field, "Cmd=", 4) == 0) {
            size_t n = (size_t)(stop - field - 4);
            for (size_t i = 0; i < ncommands; i++) {
                if (strlen(commands[i].name) == n && memcmp(commands[i].name, field + 4, n) == 0)
                    return &commands[i].answer;
            }
            return NULL;
        }
        q = stop < line_end && *stop == '&' ? stop : NULL;
    }
    return NULL;
}

/* Serve every complete request in the buffer; 0 when the connection was closed. */
static int serve(int fd) {
    conn *c = &conns[fd];
    while (!c->held && c->out_len == 0 && c->len > 0) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end == NULL) {
            if (c->len > MAX_HEAD) {
                refuse(fd);
                return 0;
            }
            return 1;
        }
        size_t head = (size_t)(end - c->buf) + 4;
        long body = 0;
        int chunked = 0;
        c->close_after = 0;
        char *line = memchr(c->buf, '\n', head);
        while (line != NULL && line + 1 < c->buf + head - 2) {
            char *next = memchr(line + 1, '\n', (size_t)(c->buf + head - line - 1));
            if (next == NULL) break;
            const char *v;
            if ((v = header_value(line + 1, next, "Content-Length")) != NULL) {
                char *stop;
                body = strtol(v, &stop, 10);
                if (stop == v || body < 0) body = -1;
            } else if (header_value(line + 1, next, "Transfer-Encoding") != NULL) {
                chunked = 1;
            } else if ((v = header_value(line + 1, next, "Connection")) != NULL) {
                if (strncasecmp(v, "close", 5) == 0) c->close_after = 1;
            }
            line = next;
        }
        if (head > MAX_HEAD || chunked || body < 0 || body > MAX_BODY) {
            refuse(fd);
            return 0;
        }
        size_t used = head + (size_t)body;
        if (c->len < used) return 1; /* the rest of the body to come */
        const unsigned char *b = (const unsigned char *)c->buf + head;
        int ping = body >= 7 && b[4] == 0x00 && b[5] == 0x0D && b[6] == 0x45;
        const blob *reply = NULL;
        if (strncmp(c->buf, "OPTIONS ", 8) == 0) {
            options++;
            reply = &options_answer;
        } else if (strncmp(c->buf, "POST ", 5) != 0) {
            refuse(fd);
            return 0;
        } else if ((reply = command_answer(c->buf, memchr(c->buf, '\r', head))) != NULL) {
            by_command++;
        } else if (!ping) {
            others++;
            reply = &other_answer;
        }
        c->len -= used; /* keep what came after it (pipelined) */
        memmove(c->buf, c->buf + used, c->len);
        if (reply == NULL) {
            hold(fd); /* answered by answer_due, or ended by the gateway */
        } else if (!answer(fd, reply)) {
            return 0;
        }
    }
    return 1;
}

static void readable(int fd) {
    conn *c = &conns[fd];
    if (c->draining) {
        static char scratch[65536];
        ssize_t r;
        while ((r = recv(fd, scratch, sizeof scratch, 0)) > 0) continue;
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) hang_up(fd);
        return;
    }
    for (;;) {
        if (c->cap - c->len < 4096) {
            size_t cap = c->cap ? 2 * c->cap : 8192;
            if (cap > MAX_HEAD + MAX_BODY + 8192) {
                refuse(fd);
                return;
            }
            c->buf = realloc(c->buf, cap);
            if (c->buf == NULL) die("realloc");
            c->cap = cap;
        }
        ssize_t r = recv(fd, c->buf + c->len, c->cap - c->len, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            hang_up(fd); /* the gateway ended the leg (a held Ping's phone is gone) */
            return;
        }
        if (r < 0) break;
        c->len += (size_t)r;
    }
    serve(fd);
}

static void accept_all(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            if (errno == EMFILE || errno == ENFILE) return; /* retried on the next event */
            return;
        }
        if ((size_t)fd >= nconns) {
            close(fd);
            continue;
        }
        accepted++;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[fd].events = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
    }
}

static void answer_due(void) {
    double t = now();
    while (hold_head < hold_tail && holds[hold_head].due <= t) {
        hold_entry e = holds[hold_head++];
        conn *c = &conns[e.fd];
        if (c->gen != e.gen || !c->held) continue; /* closed meanwhile */
        c->held = 0;
        held_now--;
        pings_answered++;
        if (answer(e.fd, &ping_answer) && c->out_len == 0) serve(e.fd);
    }
}

static void command(void) {
    static char line[4096];
    static size_t len;
    ssize_t r = read(STDIN_FILENO, line + len, sizeof line - 1 - len);
    if (r <= 0) exit(0); /* stdin closed: the bench is done */
    len += (size_t)r;
    char *nl;
    while ((nl = memchr(line, '\n', len)) != NULL) {
        *nl = '\0';
        if (strstr(line, "\"counts\"") != NULL) {
            printf("{\"event\": \"counts\", \"accepted\": %zu, \"held\": %zu, \"pings\": %zu, "
                   "\"pings_answered\": %zu, \"closed_held\": %zu, \"others\": %zu, "
                   "\"options\": %zu, \"bad\": %zu, \"by_command\": %zu}\n",
                   accepted, held_now, pings, pings_answered, closed_held, others, options, bad,
                   by_command);
            fflush(stdout);
        }
        len -= (size_t)(nl + 1 - line);
        memmove(line, nl + 1, len);
    }
    if (len == sizeof line - 1) len = 0; /* an overlong line: dropped */
}

static int listen_on(const char *host, int *port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_PASSIVE};
    struct addrinfo *ai;
    char service[16];
    snprintf(service, sizeof service, "%d", *port);
    if (getaddrinfo(host, service, &hints, &ai) != 0) {
        errno = EINVAL;
        die(host);
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) die(host);
    if (listen(fd, 4096) != 0) die("listen");
    freeaddrinfo(ai);
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0) die("getsockname");
    *port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                           : ((struct sockaddr_in *)&sa)->sin_port);
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: mailhost HOSTS PORT PREFIX HOLD [CMDS]\n");
        return 2;
    }
    int port = atoi(argv[2]);
    hold_s = atof(argv[4]);
    options_answer = load(argv[3], "options");
    ping_answer = load(argv[3], "ping");
    other_answer = load(argv[3], "other");
    if (argc == 6) {
        char *names = strdup(argv[5]);
        for (char *n = strtok(names, ","); n != NULL; n = strtok(NULL, ",")) {
            if (ncommands == MAX_COMMANDS || strlen(n) >= sizeof commands[0].name) {
                errno = EINVAL;
                die(n);
            }
            char suffix[80];
            snprintf(suffix, sizeof suffix, "cmd.%s", n);
            strcpy(commands[ncommands].name, n);
            commands[ncommands++].answer = load(argv[3], suffix);
        }
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    nconns = rl.rlim_cur > 1048576 ? 1048576 : (size_t)rl.rlim_cur;
    conns = calloc(nconns, sizeof *conns);
    if (conns == NULL) die("calloc");

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    char *hosts = strdup(argv[1]);
    for (char *h = strtok(hosts, ","); h != NULL; h = strtok(NULL, ",")) {
        if (nlisteners == MAX_LISTENERS) break;
        int fd = listen_on(h, &port);
        listeners[nlisteners++] = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
    }
    struct epoll_event in = {.events = EPOLLIN, .data.fd = STDIN_TAG};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &in) != 0) die("epoll_ctl stdin");
    printf("{\"event\": \"ready\", \"port\": %d}\n", port);
    fflush(stdout);

    struct epoll_event events[512];
    for (;;) {
        int timeout = -1;
        if (hold_head < hold_tail) {
            double wait = holds[hold_head].due - now();
            timeout = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
        }
        int k = epoll_wait(epfd, events, 512, timeout);
        if (k < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < k; i++) {
            int fd = events[i].data.fd;
            if (fd == STDIN_TAG) {
                command();
                continue;
            }
            int listener = 0;
            for (int j = 0; j < nlisteners; j++) listener |= listeners[j] == fd;
            if (listener) {
                accept_all(fd);
                continue;
            }
            conn *c = &conns[fd];
            if (c->events == 0) continue; /* closed earlier in this batch */
            if (c->draining) {
                readable(fd);
                continue;
            }
            if ((events[i].events & EPOLLOUT) && c->out_len > 0) {
                if (!flush_out(fd)) continue;
                if (c->out_len == 0 && !serve(fd)) continue; /* pipelined requests */
            }
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readable(fd);
        }
        answer_due();
    }
}
