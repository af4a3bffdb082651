/*
 * mqttload: the load generator of the certmq benchmark.
 *
 * One process holds one publisher connection and K subscriber connections to a
 * broker, plain TCP or TLS, and measures end-to-end throughput: from the first
 * PUBLISH written to the moment every subscriber has received every message.
 *
 * It speaks MQTT directly instead of going through libmosquitto because the
 * load generator must never be the bottleneck: libmosquitto (and therefore
 * mosquitto_pub) issues one write() or SSL_write() per packet, while this
 * program packs as many PUBLISH packets as the socket accepts into each write
 * and parses whole read buffers (--write-batch 1 makes the publisher behave
 * like libmosquitto, one packet per write). Two threads: the publisher, and one
 * epoll loop that serves all subscribers.
 *
 * Protocol with the caller: after every connection is up and every SUBACK is
 * in, print "READY" and wait for one line on stdin; then run, and print one
 * JSON object on stdout.
 *
 * Build: gcc -O2 -o mqttload mqttload.c -lssl -lcrypto -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK 65536
#define WRITE_BATCH 65536

typedef struct {
    const char *host;
    int port;
    int tls;
    const char *cafile;
    const char *servername;
    int subscribers;
    int qos;
    int size;
    long count;
    double duration;
    int window;
    int protocol; /* 4 = MQTT 3.1.1, 5 = MQTT 5.0 */
    const char *topic;
    const char *client_prefix;
    long max_lead; /* in deliveries: messages ahead of the slowest subscriber, times subscribers */
    int write_batch; /* bytes of PUBLISH packets the publisher gathers before a write; 1: one packet per write */
    double idle_timeout;
    int timeout;
    int persistent; /* subscribers keep their sessions: clean session 0, or Session Expiry on 5.0 */
} options_t;

typedef struct {
    int fd;
    SSL *ssl;
    unsigned char *in;
    size_t in_len, in_cap;
    unsigned char *out;
    size_t out_off, out_len, out_cap;
    int connacked, subacked;
    int server_receive_maximum;
    uint64_t received; /* PUBLISH packets */
    uint64_t next_sequence;   /* the sequence number the next PUBLISH should carry */
    uint64_t sequence_errors; /* messages lost, duplicated or out of order */
    uint64_t acked;    /* PUBACK packets */
    uint64_t bytes_in;
} connection_t;

static options_t opt = {
    .host = "127.0.0.1", .port = 1883, .servername = "localhost", .subscribers = 1,
    .qos = 0, .size = 32, .count = 0, .duration = 3.0, .window = 1000, .protocol = 4,
    .topic = "bench/load", .client_prefix = "mqttload", .max_lead = 10000, .write_batch = WRITE_BATCH,
    .idle_timeout = 5.0, .timeout = 120,
};
static SSL_CTX *tls_context;

static _Atomic int publisher_finished;
static _Atomic uint64_t total_sent;
static _Atomic uint64_t slowest_received; /* the fewest messages any subscriber has received */
static double t_first_publish, t_publish_end, t_acks_end;
static double publisher_cpu;
/*
 * A publisher that is blocked (window full, or too far ahead of the subscribers) sleeps
 * this long before looking again, so that acknowledgements arrive in batches and the
 * next write carries many packets instead of one.
 */
#define PUBLISHER_PAUSE_MICROSECONDS 200

/*
 * With many subscribers, a round of the subscriber loop that brought in less than
 * this many bytes per subscriber (two small messages each) is followed by a short
 * sleep, so that the next read() on each connection picks up several messages
 * instead of one. One subscriber connection receives far less in that time than
 * its socket buffer holds. A single subscriber always reads eagerly: a broker that
 * writes one TCP segment per message would fill its receive buffer during a pause.
 */
#define FANOUT_MIN_SUBSCRIBERS 10
#define FANOUT_SMALL_ROUND_BYTES_PER_SUBSCRIBER 64
#define FANOUT_PAUSE_MICROSECONDS 1000
static int fanout_pause_microseconds = FANOUT_PAUSE_MICROSECONDS;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mqttload: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    ERR_print_errors_fp(stderr);
    exit(2);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void reserve(unsigned char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    *buf = realloc(*buf, n);
    if (!*buf) die("out of memory");
    *cap = n;
}

static void out_append(connection_t *c, const void *data, size_t len) {
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    reserve(&c->out, &c->out_cap, c->out_len + len);
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

static size_t encode_length(unsigned char *p, size_t len) {
    size_t n = 0;
    do {
        unsigned char b = len % 128;
        len /= 128;
        p[n++] = b | (len ? 128 : 0);
    } while (len);
    return n;
}

/* ---- transport: plain or TLS, non-blocking ---- */

static void connect_socket(connection_t *c) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(opt.port)};
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) die("bad IPv4 address %s", opt.host);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket: %s", strerror(errno));
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        die("connect %s:%d: %s", opt.host, opt.port, strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    if (!opt.tls) return;
    c->ssl = SSL_new(tls_context);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, opt.servername);
    SSL_set1_host(c->ssl, opt.servername);
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1) break;
        int e = SSL_get_error(c->ssl, r);
        struct pollfd p = {.fd = c->fd, .events = e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN};
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) die("TLS handshake failed");
        poll(&p, 1, 1000);
    }
}

/* >0: bytes, 0: would block, -1: closed or failed */
static ssize_t transport_read(connection_t *c, void *buf, size_t len) {
    if (c->ssl) {
        int r = SSL_read(c->ssl, buf, (int)len);
        if (r > 0) return r;
        int e = SSL_get_error(c->ssl, r);
        return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
    }
    ssize_t r = read(c->fd, buf, len);
    if (r > 0) return r;
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    return -1;
}

static ssize_t transport_write(connection_t *c, const void *buf, size_t len) {
    if (c->ssl) {
        int r = SSL_write(c->ssl, buf, (int)len);
        if (r > 0) return r;
        int e = SSL_get_error(c->ssl, r);
        return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
    }
    ssize_t r = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (r >= 0) return r;
    return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
}

static void flush(connection_t *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = transport_write(c, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) die("write failed: broker closed the connection");
        if (n == 0) break;
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
}

/* ---- MQTT packets ---- */

static void queue_connect(connection_t *c, const char *client_id, int receive_maximum, int persistent) {
    unsigned char body[512], packet[520];
    size_t n = 0, id_len = strlen(client_id);
    memcpy(body, "\0\4MQTT", 6);
    n = 6;
    body[n++] = (unsigned char)opt.protocol;
    body[n++] = persistent ? 0x00 : 0x02; /* clean start, unless the session is to be kept */
    body[n++] = 0x01; /* keep alive 300 s: longer than any cell */
    body[n++] = 0x2c;
    if (opt.protocol == 5) {
        body[n++] = persistent ? 8 : 3; /* properties: Receive Maximum, Session Expiry Interval */
        body[n++] = 0x21;
        body[n++] = (unsigned char)(receive_maximum >> 8);
        body[n++] = (unsigned char)receive_maximum;
        if (persistent) {
            body[n++] = 0x11; /* one hour */
            body[n++] = 0;
            body[n++] = 0;
            body[n++] = 0x0e;
            body[n++] = 0x10;
        }
    }
    body[n++] = (unsigned char)(id_len >> 8);
    body[n++] = (unsigned char)id_len;
    memcpy(body + n, client_id, id_len);
    n += id_len;
    packet[0] = 0x10;
    size_t h = 1 + encode_length(packet + 1, n);
    memcpy(packet + h, body, n);
    out_append(c, packet, h + n);
}

static void queue_subscribe(connection_t *c) {
    unsigned char body[512], packet[520];
    size_t n = 0, topic_len = strlen(opt.topic);
    body[n++] = 0;
    body[n++] = 1; /* packet id */
    if (opt.protocol == 5) body[n++] = 0;
    body[n++] = (unsigned char)(topic_len >> 8);
    body[n++] = (unsigned char)topic_len;
    memcpy(body + n, opt.topic, topic_len);
    n += topic_len;
    body[n++] = (unsigned char)opt.qos;
    packet[0] = 0x82;
    size_t h = 1 + encode_length(packet + 1, n);
    memcpy(packet + h, body, n);
    out_append(c, packet, h + n);
}

static size_t skip_properties(const unsigned char *p, size_t len, size_t pos, int *receive_maximum) {
    size_t plen = 0, shift = 0;
    while (pos < len) {
        unsigned char b = p[pos++];
        plen |= (size_t)(b & 127) << shift;
        shift += 7;
        if (!(b & 128)) break;
    }
    size_t end = pos + plen;
    while (receive_maximum && pos + 2 < end && pos + 2 < len) {
        /* Only Receive Maximum matters here; stop at the first property we can't size. */
        if (p[pos] == 0x21) {
            *receive_maximum = (p[pos + 1] << 8) | p[pos + 2];
            pos += 3;
        } else if (p[pos] == 0x24 || p[pos] == 0x25 || p[pos] == 0x28 || p[pos] == 0x29 || p[pos] == 0x2a) {
            pos += 2;
        } else if (p[pos] == 0x22 || p[pos] == 0x13) {
            pos += 3;
        } else if (p[pos] == 0x27 || p[pos] == 0x11) {
            pos += 5;
        } else {
            break;
        }
    }
    return end;
}

static void handle_packet(connection_t *c, unsigned char header, const unsigned char *body, size_t len) {
    switch (header >> 4) {
    case 2: /* CONNACK */
        if (len < 2 || body[1] != 0) die("CONNACK refused, code 0x%02x", len >= 2 ? body[1] : 0xff);
        if (opt.protocol == 5) skip_properties(body, len, 2, &c->server_receive_maximum);
        c->connacked = 1;
        break;
    case 3: { /* PUBLISH */
        c->received++;
        int qos = (header >> 1) & 3;
        size_t topic_len = ((size_t)body[0] << 8) | body[1];
        size_t payload = 2 + topic_len;
        if (qos > 0) {
            unsigned char ack[4] = {0x40, 2, body[payload], body[payload + 1]};
            out_append(c, ack, 4);
            payload += 2;
        }
        if (opt.protocol == 5) payload = skip_properties(body, len, payload, NULL);
        /* One publisher, so every subscriber must see 0, 1, 2, ... in order (MQTT 4.6). */
        if (opt.size >= 8 && payload + 8 <= len) {
            uint64_t sequence = 0;
            for (int i = 0; i < 8; i++) sequence = (sequence << 8) | body[payload + i];
            if (sequence != c->next_sequence) c->sequence_errors++;
            c->next_sequence = sequence + 1;
        }
        break;
    }
    case 4: /* PUBACK */
        c->acked++;
        break;
    case 9: { /* SUBACK */
        size_t pos = 2;
        if (opt.protocol == 5) pos = skip_properties(body, len, pos, NULL);
        if (pos >= len || body[pos] >= 0x80) die("subscription refused, code 0x%02x", pos < len ? body[pos] : 0xff);
        c->subacked = 1;
        break;
    }
    case 14: /* DISCONNECT */
        die("broker sent DISCONNECT (reason 0x%02x)", len ? body[0] : 0);
    default:
        break;
    }
}

/* Read what is available, handle every complete packet. Returns packets received, -1 if closed. */
static long service_read(connection_t *c) {
    long packets = 0;
    for (int rounds = 0; rounds < 16; rounds++) {
        reserve(&c->in, &c->in_cap, c->in_len + READ_CHUNK);
        ssize_t n = transport_read(c, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0) return -1;
        if (n == 0) break;
        c->in_len += (size_t)n;
        c->bytes_in += (uint64_t)n;
        size_t pos = 0;
        for (;;) {
            if (c->in_len - pos < 2) break;
            size_t remaining = 0, i = pos + 1, shift = 0;
            int complete = 0;
            for (int k = 0; k < 4 && i < c->in_len; k++) {
                unsigned char b = c->in[i++];
                remaining |= (size_t)(b & 127) << shift;
                shift += 7;
                if (!(b & 128)) {
                    complete = 1;
                    break;
                }
            }
            if (!complete || c->in_len - i < remaining) break;
            handle_packet(c, c->in[pos], c->in + i, remaining);
            packets++;
            pos = i + remaining;
        }
        if (pos) {
            memmove(c->in, c->in + pos, c->in_len - pos);
            c->in_len -= pos;
        }
    }
    return packets;
}

/* Drive one connection until cond(c) holds, during setup. */
static void pump_until(connection_t *c, int (*cond)(connection_t *), const char *what) {
    double deadline = now() + opt.timeout;
    while (!cond(c)) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN | (c->out_len > c->out_off ? POLLOUT : 0)};
        if (!(c->ssl && SSL_has_pending(c->ssl))) poll(&p, 1, 200);
        flush(c);
        if (service_read(c) < 0) die("broker closed the connection while waiting for %s", what);
        if (now() > deadline) die("timed out waiting for %s", what);
    }
}

static int is_connacked(connection_t *c) { return c->connacked; }
static int is_subacked(connection_t *c) { return c->subacked; }

/* ---- publisher ---- */

static void *publisher_main(void *arg) {
    connection_t *c = arg;
    size_t topic_len = strlen(opt.topic);
    size_t body_len = 2 + topic_len + (opt.qos ? 2 : 0) + (opt.protocol == 5 ? 1 : 0) + (size_t)opt.size;
    unsigned char packet[16 + 65536 + 1024];
    size_t h = 1;
    packet[0] = (unsigned char)(0x30 | (opt.qos << 1));
    h += encode_length(packet + 1, body_len);
    size_t p = h;
    packet[p++] = (unsigned char)(topic_len >> 8);
    packet[p++] = (unsigned char)topic_len;
    memcpy(packet + p, opt.topic, topic_len);
    p += topic_len;
    size_t id_offset = p;
    if (opt.qos) p += 2;
    if (opt.protocol == 5) packet[p++] = 0;
    size_t sequence_offset = p; /* the payload starts with a big-endian sequence number */
    memset(packet + p, 'x', (size_t)opt.size);
    p += (size_t)opt.size;
    size_t packet_len = p;

    uint64_t window = (uint64_t)opt.window;
    if (c->server_receive_maximum > 0 && (uint64_t)c->server_receive_maximum < window)
        window = (uint64_t)c->server_receive_maximum;
    uint64_t limit = opt.count > 0 ? (uint64_t)opt.count : UINT64_MAX;
    uint64_t sent = 0;
    uint64_t lead_messages = (uint64_t)(opt.max_lead / opt.subscribers);
    if (lead_messages < 100) lead_messages = 100;
    unsigned packet_id = 0;
    int stopped = 0;
    double cpu0 = thread_cpu();
    t_first_publish = now();
    double end_time = opt.duration > 0 ? t_first_publish + opt.duration : 1e300;
    for (;;) {
        /* Never run more than max_lead deliveries ahead of the slowest subscriber: the cell
           measures sustained throughput, not how much a broker can buffer. */
        uint64_t lead_limit = opt.max_lead > 0 ? atomic_load(&slowest_received) + lead_messages : UINT64_MAX;
        if (!stopped) {
            while (c->out_len - c->out_off < (size_t)opt.write_batch && sent < limit && sent < lead_limit &&
                   (opt.qos == 0 || sent - c->acked < window)) {
                if (opt.qos) {
                    packet_id = packet_id % 65535 + 1;
                    packet[id_offset] = (unsigned char)(packet_id >> 8);
                    packet[id_offset + 1] = (unsigned char)packet_id;
                }
                if (opt.size >= 8)
                    for (int i = 0; i < 8; i++) packet[sequence_offset + i] = (unsigned char)(sent >> (56 - 8 * i));
                out_append(c, packet, packet_len);
                sent++;
            }
            if (sent >= limit || now() >= end_time) {
                stopped = 1;
                atomic_store(&total_sent, sent);
            }
        }
        flush(c);
        int drained = c->out_off == c->out_len;
        if (stopped && drained && !t_publish_end) {
            t_publish_end = now();
            atomic_store(&publisher_finished, 1);
        }
        if (stopped && drained && (opt.qos == 0 || c->acked >= sent)) break;
        int blocked = sent >= lead_limit || (opt.qos && sent - c->acked >= window);
        if (!stopped && drained && !blocked) {
            /* The socket took everything: keep filling, but pick up acknowledgements on the way. */
            if (opt.qos && service_read(c) < 0) die("broker closed the publisher connection");
            continue;
        }
        if (drained) usleep(PUBLISHER_PAUSE_MICROSECONDS); /* let acknowledgements and subscribers catch up */
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN | (drained ? 0 : POLLOUT)};
        if (!(c->ssl && SSL_has_pending(c->ssl))) poll(&pfd, 1, drained ? 0 : 100);
        if (service_read(c) < 0) die("broker closed the publisher connection");
    }
    t_acks_end = now();
    publisher_cpu = thread_cpu() - cpu0;
    return NULL;
}

/* ---- main ---- */

static void usage(void) {
    fprintf(stderr,
            "usage: mqttload [--host IP] [--port N] [--tls --cafile FILE [--servername NAME]]\n"
            "                [--subscribers K] [--qos 0|1] [--size BYTES] [--count N] [--duration SECONDS]\n"
            "                [--window N] [--protocol 4|5] [--topic T] [--client-prefix P]\n"
            "                [--max-lead DELIVERIES] [--write-batch BYTES] [--fanout-pause-us N]\n"
            "                [--idle-timeout SECONDS] [--timeout SECONDS] [--persistent]\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option longopts[] = {
        {"host", 1, 0, 'h'},       {"port", 1, 0, 'p'},      {"tls", 0, 0, 't'},
        {"cafile", 1, 0, 'c'},     {"servername", 1, 0, 'n'}, {"subscribers", 1, 0, 'k'},
        {"qos", 1, 0, 'q'},        {"size", 1, 0, 's'},      {"count", 1, 0, 'N'},
        {"duration", 1, 0, 'd'},   {"window", 1, 0, 'w'},    {"protocol", 1, 0, 'V'},
        {"topic", 1, 0, 'T'},      {"client-prefix", 1, 0, 'P'}, {"max-lead", 1, 0, 'L'}, {"write-batch", 1, 0, 'B'}, {"fanout-pause-us", 1, 0, 'F'},  {"idle-timeout", 1, 0, 'i'},
        {"timeout", 1, 0, 'x'},    {"persistent", 0, 0, 'S'}, {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 't': opt.tls = 1; break;
        case 'c': opt.cafile = optarg; break;
        case 'n': opt.servername = optarg; break;
        case 'k': opt.subscribers = atoi(optarg); break;
        case 'q': opt.qos = atoi(optarg); break;
        case 's': opt.size = atoi(optarg); break;
        case 'N': opt.count = atol(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.window = atoi(optarg); break;
        case 'V': opt.protocol = atoi(optarg); break;
        case 'T': opt.topic = optarg; break;
        case 'P': opt.client_prefix = optarg; break;
        case 'L': opt.max_lead = atol(optarg); break;
        case 'B': opt.write_batch = atoi(optarg); break;
        case 'F': fanout_pause_microseconds = atoi(optarg); break;
        case 'i': opt.idle_timeout = atof(optarg); break;
        case 'x': opt.timeout = atoi(optarg); break;
        case 'S': opt.persistent = 1; break;
        default: usage();
        }
    }
    if (opt.qos < 0 || opt.qos > 1 || opt.subscribers < 1 || opt.size < 0 || opt.size > 65536 ||
        (opt.protocol != 4 && opt.protocol != 5) || opt.write_batch < 1 || opt.window < 1 || opt.window > 65535 ||
        (opt.count <= 0 && opt.duration <= 0) || (opt.tls && !opt.cafile))
        usage();
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)opt.timeout); /* a hard bound, whatever the broker does */

    if (opt.tls) {
        tls_context = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_min_proto_version(tls_context, TLS1_2_VERSION);
        SSL_CTX_set_verify(tls_context, SSL_VERIFY_PEER, NULL);
        if (SSL_CTX_load_verify_locations(tls_context, opt.cafile, NULL) != 1) die("cannot load CA file %s", opt.cafile);
    }

    int k = opt.subscribers;
    connection_t *subs = calloc((size_t)k, sizeof *subs);
    connection_t publisher = {0};
    char client_id[256];
    for (int i = 0; i < k; i++) {
        connect_socket(&subs[i]);
        snprintf(client_id, sizeof client_id, "%s-sub-%d", opt.client_prefix, i);
        queue_connect(&subs[i], client_id, 65535, opt.persistent);
        queue_subscribe(&subs[i]);
        flush(&subs[i]);
    }
    for (int i = 0; i < k; i++) pump_until(&subs[i], is_subacked, "SUBACK");
    connect_socket(&publisher);
    snprintf(client_id, sizeof client_id, "%s-pub", opt.client_prefix);
    queue_connect(&publisher, client_id, 65535, 0);
    pump_until(&publisher, is_connacked, "CONNACK");

    const char *tls_version = opt.tls ? SSL_get_version(publisher.ssl) : "";
    const char *tls_cipher = opt.tls ? SSL_get_cipher_name(publisher.ssl) : "";
    printf("READY\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 1;

    /* Subscribers read eagerly, as real clients do: a broker that writes one small TCP
       segment per message fills a lazy reader's receive buffer in a few dozen messages. */
    int epoll_fd = epoll_create1(0);
    int *watching_out = calloc((size_t)k, sizeof *watching_out);
    for (int i = 0; i < k; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(epoll_fd, EPOLL_CTL_ADD, subs[i].fd, &ev);
    }
    struct epoll_event *events = calloc((size_t)k, sizeof *events);
    double cpu0 = thread_cpu();
    pthread_t thread;
    pthread_create(&thread, NULL, publisher_main, &publisher);

    double t_last_receive = 0, t_progress = now(), hard_end = now() + opt.timeout - 5;
    uint64_t received_total = 0, expected = 0;
    int complete = 0;
    for (;;) {
        int pending_tls = 0;
        for (int i = 0; i < k && opt.tls; i++)
            if (SSL_has_pending(subs[i].ssl)) pending_tls = 1;
        int ready = epoll_wait(epoll_fd, events, k, pending_tls ? 0 : 50);
        if (ready < 0) ready = 0;
        long got = 0;
        uint64_t round_bytes = 0;
        for (int e = 0; e < ready || (pending_tls && e < k); e++) {
            int i;
            if (e < ready) {
                i = (int)events[e].data.u32;
            } else {
                i = e; /* TLS records already decrypted and buffered: no socket event for them */
                if (!SSL_has_pending(subs[i].ssl)) continue;
            }
            connection_t *c = &subs[i];
            uint64_t before = c->bytes_in;
            long n = service_read(c);
            round_bytes += c->bytes_in - before;
            if (n < 0) die("broker closed subscriber connection %d", i);
            got += n;
            flush(c);
            int want_out = c->out_len > c->out_off;
            if (want_out != watching_out[i]) {
                struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.u32 = (uint32_t)i};
                epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
                watching_out[i] = want_out;
            }
        }
        double t = now();
        if (got) {
            t_last_receive = t;
            t_progress = t;
            uint64_t slowest = UINT64_MAX;
            for (int i = 0; i < k; i++)
                if (subs[i].received < slowest) slowest = subs[i].received;
            atomic_store(&slowest_received, slowest);
        }
        if (atomic_load(&publisher_finished)) {
            expected = atomic_load(&total_sent);
            int all = 1;
            for (int i = 0; i < k && all; i++) all = subs[i].received >= expected;
            if (all) {
                complete = 1;
                break;
            }
            if (t - t_progress > opt.idle_timeout) break;
        }
        if (t > hard_end) break;
        if (k >= FANOUT_MIN_SUBSCRIBERS && fanout_pause_microseconds > 0 && !pending_tls &&
            round_bytes < (uint64_t)k * FANOUT_SMALL_ROUND_BYTES_PER_SUBSCRIBER)
            usleep((useconds_t)fanout_pause_microseconds);
    }
    double subscriber_cpu = thread_cpu() - cpu0;
    int publisher_done = atomic_load(&publisher_finished);
    if (publisher_done) pthread_join(thread, NULL);
    expected = atomic_load(&total_sent);
    received_total = 0;
    uint64_t sequence_errors = 0;
    for (int i = 0; i < k; i++) {
        received_total += subs[i].received;
        sequence_errors += subs[i].sequence_errors;
    }
    double elapsed = t_last_receive > t_first_publish ? t_last_receive - t_first_publish : 0;
    printf("{\"subscribers\": %d, \"qos\": %d, \"size\": %d, \"protocol\": %d, \"tls\": %s, "
           "\"tls_version\": \"%s\", \"tls_cipher\": \"%s\", "
           "\"sent\": %llu, \"acked\": %llu, \"received\": %llu, \"expected\": %llu, \"complete\": %s, \"sequence_errors\": %llu, "
           "\"elapsed_s\": %.6f, \"publish_s\": %.6f, \"acks_s\": %.6f, \"deliveries_per_s\": %.1f, "
           "\"publisher_cpu_s\": %.4f, \"subscriber_cpu_s\": %.4f}\n",
           k, opt.qos, opt.size, opt.protocol, opt.tls ? "true" : "false", tls_version, tls_cipher,
           (unsigned long long)expected, (unsigned long long)publisher.acked, (unsigned long long)received_total,
           (unsigned long long)expected * (unsigned long long)k, complete ? "true" : "false",
           (unsigned long long)sequence_errors, elapsed,
           t_publish_end ? t_publish_end - t_first_publish : 0, t_acks_end ? t_acks_end - t_first_publish : 0,
           elapsed > 0 ? (double)received_total / elapsed : 0.0, publisher_done ? publisher_cpu : 0.0,
           subscriber_cpu);
    fflush(stdout);
    _exit(complete ? 0 : 3);
}
