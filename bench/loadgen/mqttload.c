/*
 * mqttload: the load generator of the certmq benchmark.
 *
 * One process holds one publisher connection and K subscriber connections to a
 * broker, plain TCP or TLS, and measures end-to-end throughput: from the first
 * PUBLISH written to the moment every subscriber has received every message.
 *
 * With --publishers P (P > 1) it measures fan-in: publisher i publishes on
 * TOPIC/j/i with j = i mod K, and subscriber j subscribes to TOPIC/j/+, so that
 * each message has one subscriber and each subscriber hears P/K publishers.
 * --sub-port connects the subscribers to another port (another node of a
 * cluster) than the publishers. --latency stamps each message with its sending
 * time and reports percentiles of the time to each delivery; --rate paces the
 * publishers (messages per second, all publishers together) for such a run.
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
    int sub_port;   /* the subscribers' port; 0: --port */
    int publishers;
    double rate;    /* messages per second, all publishers together; 0: as fast as the broker takes them */
    int latency;    /* stamp each message with its sending time; report delivery latency percentiles */
    long latency_samples; /* at most this many latencies are kept */
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
    uint64_t *next_sequences; /* the same, per publisher, when there are several */
    uint64_t sequence_errors; /* messages lost, duplicated or out of order */
    uint64_t acked;    /* PUBACK packets */
    uint64_t bytes_in;
} connection_t;

static options_t opt = {
    .host = "127.0.0.1", .port = 1883, .servername = "localhost", .subscribers = 1,
    .qos = 0, .size = 32, .count = 0, .duration = 3.0, .window = 1000, .protocol = 4,
    .topic = "bench/load", .client_prefix = "mqttload", .max_lead = 10000, .write_batch = WRITE_BATCH,
    .idle_timeout = 5.0, .timeout = 120, .publishers = 1, .latency_samples = 1000000,
};
static SSL_CTX *tls_context;

static _Atomic int publisher_finished;
static _Atomic uint64_t total_sent;
static _Atomic uint64_t slowest_received; /* the fewest messages any subscriber has received */
/* With several publishers: the messages each subscriber has received, and is to receive. */
static _Atomic uint64_t *subscriber_received;
static uint64_t *subscriber_expected;
/* Delivery latencies in nanoseconds, as the subscribers see them (--latency). */
static uint64_t *latencies;
static long latency_count, latency_dropped;
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

/* The payload starts with a big-endian sequence number, then (several publishers) the
   publisher's index, then (--latency) the sending time in nanoseconds. */
#define SEQUENCE_OFFSET 0
#define PUBLISHER_OFFSET 8
#define STAMP_OFFSET 12
#define STAMPED_SIZE 20
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

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t read_be(const unsigned char *p, int bytes) {
    uint64_t value = 0;
    for (int i = 0; i < bytes; i++) value = (value << 8) | p[i];
    return value;
}

static void write_be(unsigned char *p, uint64_t value, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(value >> (8 * (bytes - 1 - i)));
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

static void connect_socket(connection_t *c, int port) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) die("bad IPv4 address %s", opt.host);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket: %s", strerror(errno));
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        die("connect %s:%d: %s", opt.host, port, strerror(errno));
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

static void queue_subscribe(connection_t *c, const char *filter) {
    unsigned char body[512], packet[520];
    size_t n = 0, topic_len = strlen(filter);
    body[n++] = 0;
    body[n++] = 1; /* packet id */
    if (opt.protocol == 5) body[n++] = 0;
    body[n++] = (unsigned char)(topic_len >> 8);
    body[n++] = (unsigned char)topic_len;
    memcpy(body + n, filter, topic_len);
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
        /* Every subscriber must see 0, 1, 2, ... in order from each publisher (MQTT 4.6). */
        if (c->next_sequences && payload + PUBLISHER_OFFSET + 4 <= len) {
            uint64_t sequence = read_be(body + payload + SEQUENCE_OFFSET, 8);
            uint64_t publisher = read_be(body + payload + PUBLISHER_OFFSET, 4);
            if (publisher >= (uint64_t)opt.publishers) {
                c->sequence_errors++;
            } else {
                if (sequence != c->next_sequences[publisher]) c->sequence_errors++;
                c->next_sequences[publisher] = sequence + 1;
            }
        } else if (opt.size >= 8 && payload + 8 <= len) {
            uint64_t sequence = 0;
            for (int i = 0; i < 8; i++) sequence = (sequence << 8) | body[payload + i];
            if (sequence != c->next_sequence) c->sequence_errors++;
            c->next_sequence = sequence + 1;
        }
        if (opt.latency && payload + STAMP_OFFSET + 8 <= len) {
            uint64_t sent_at = read_be(body + payload + STAMP_OFFSET, 8), at = now_ns();
            if (latency_count < opt.latency_samples)
                latencies[latency_count++] = at > sent_at ? at - sent_at : 0;
            else
                latency_dropped++;
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

/* ---- publishers ---- */

typedef struct {
    connection_t c;
    char topic[320];
    unsigned char *packet; /* a PUBLISH packet: its packet id and payload are rewritten for each message */
    size_t packet_len, id_offset, payload_offset;
    unsigned packet_id;
    uint64_t sent;
    int subscriber; /* the one subscriber of its messages (several publishers); -1: every subscriber */
} publisher_t;

static publisher_t *publishers;

static void prepare_publish(publisher_t *pub) {
    size_t topic_len = strlen(pub->topic);
    size_t body_len = 2 + topic_len + (opt.qos ? 2 : 0) + (opt.protocol == 5 ? 1 : 0) + (size_t)opt.size;
    unsigned char *packet = pub->packet = malloc(16 + body_len);
    if (!packet) die("out of memory");
    size_t p = 1;
    packet[0] = (unsigned char)(0x30 | (opt.qos << 1));
    p += encode_length(packet + 1, body_len);
    packet[p++] = (unsigned char)(topic_len >> 8);
    packet[p++] = (unsigned char)topic_len;
    memcpy(packet + p, pub->topic, topic_len);
    p += topic_len;
    pub->id_offset = p;
    if (opt.qos) p += 2;
    if (opt.protocol == 5) packet[p++] = 0;
    pub->payload_offset = p;
    memset(packet + p, 'x', (size_t)opt.size);
    pub->packet_len = p + (size_t)opt.size;
}

/* Queue the next message of publisher number index. */
static void append_message(publisher_t *pub, int index) {
    unsigned char *packet = pub->packet, *payload = packet + pub->payload_offset;
    if (opt.qos) {
        pub->packet_id = pub->packet_id % 65535 + 1;
        write_be(packet + pub->id_offset, pub->packet_id, 2);
    }
    if (opt.size >= 8) write_be(payload + SEQUENCE_OFFSET, pub->sent, 8);
    if (opt.publishers > 1) write_be(payload + PUBLISHER_OFFSET, (uint64_t)index, 4);
    if (opt.latency) write_be(payload + STAMP_OFFSET, now_ns(), 8);
    out_append(&pub->c, packet, pub->packet_len);
    pub->sent++;
}

/* Read what the broker sent to the publishers (acknowledgements). One publisher is read
   at once; several, those that poll says have something. */
static void read_publishers(struct pollfd *pfds, int polled) {
    int n = opt.publishers;
    if (n == 1) {
        if (service_read(&publishers[0].c) < 0) die("broker closed the publisher connection");
        return;
    }
    if (!polled) {
        for (int i = 0; i < n; i++) pfds[i] = (struct pollfd){.fd = publishers[i].c.fd, .events = POLLIN};
        poll(pfds, (nfds_t)n, 0);
    }
    for (int i = 0; i < n; i++) {
        connection_t *c = &publishers[i].c;
        if ((pfds[i].revents & (POLLIN | POLLERR | POLLHUP)) || (c->ssl && SSL_has_pending(c->ssl)))
            if (service_read(c) < 0) die("broker closed publisher connection %d", i);
    }
}

static void *publisher_main(void *arg) {
    (void)arg;
    int n = opt.publishers, k = opt.subscribers;
    uint64_t window = (uint64_t)opt.window;
    for (int i = 0; i < n; i++) {
        int maximum = publishers[i].c.server_receive_maximum;
        if (maximum > 0 && (uint64_t)maximum < window) window = (uint64_t)maximum;
    }
    uint64_t limit = opt.count > 0 ? (uint64_t)opt.count : UINT64_MAX; /* messages, all publishers together */
    uint64_t sent = 0;
    /* Messages a publisher may run ahead of the slowest of its subscribers. */
    uint64_t lead_messages = (uint64_t)(opt.max_lead / opt.subscribers);
    if (lead_messages < 100) lead_messages = 100;
    uint64_t *subscriber_sent = calloc((size_t)k, sizeof *subscriber_sent);
    struct pollfd *pfds = calloc((size_t)n, sizeof *pfds);
    int stopped = 0;
    double cpu0 = thread_cpu();
    t_first_publish = now();
    double end_time = opt.duration > 0 ? t_first_publish + opt.duration : 1e300;
    for (;;) {
        /* Never run more than max_lead deliveries ahead of the subscribers: the cell
           measures sustained throughput, not how much a broker can buffer. */
        uint64_t due = opt.rate > 0 ? (uint64_t)((now() - t_first_publish) * opt.rate) + 1 : UINT64_MAX;
        int blocked = 1;
        if (!stopped) {
            for (int i = 0; i < n; i++) {
                publisher_t *pub = &publishers[i];
                uint64_t received = pub->subscriber < 0 ? atomic_load(&slowest_received)
                                                        : atomic_load(&subscriber_received[pub->subscriber]);
                uint64_t *ahead = pub->subscriber < 0 ? &sent : &subscriber_sent[pub->subscriber];
                uint64_t lead_limit = opt.max_lead > 0 ? received + lead_messages : UINT64_MAX;
                while (pub->c.out_len - pub->c.out_off < (size_t)opt.write_batch && sent < limit && sent < due &&
                       *ahead < lead_limit && (opt.qos == 0 || pub->sent - pub->c.acked < window)) {
                    append_message(pub, i);
                    sent++;
                    if (pub->subscriber >= 0) subscriber_sent[pub->subscriber]++;
                    if (opt.rate > 0 && n > 1) break; /* paced: the publishers take turns */
                }
                if (*ahead < lead_limit && (opt.qos == 0 || pub->sent - pub->c.acked < window)) blocked = 0;
            }
            if (sent >= due) blocked = 1;
            if (sent >= limit || now() >= end_time) {
                stopped = 1;
                memcpy(subscriber_expected, subscriber_sent, (size_t)k * sizeof *subscriber_sent);
                atomic_store(&total_sent, sent);
            }
        }
        int drained = 1, acked = 1, tls_pending = 0;
        for (int i = 0; i < n; i++) {
            connection_t *c = &publishers[i].c;
            flush(c);
            drained &= c->out_off == c->out_len;
            acked &= c->acked >= publishers[i].sent;
            tls_pending |= c->ssl && SSL_has_pending(c->ssl);
        }
        if (stopped && drained && !t_publish_end) {
            t_publish_end = now();
            atomic_store(&publisher_finished, 1);
        }
        if (stopped && drained && (opt.qos == 0 || acked)) break;
        if (!stopped && drained && !blocked) {
            /* The sockets took everything: keep filling, but pick up acknowledgements on the way. */
            if (opt.qos) read_publishers(pfds, 0);
            continue;
        }
        if (drained) {
            double wait = opt.rate > 0 && !stopped && sent >= due ? (double)due / opt.rate - (now() - t_first_publish) : 0;
            if (wait > 0.01) wait = 0.01;
            /* let acknowledgements and subscribers catch up, or the next paced message fall due */
            usleep(wait > 0 ? (useconds_t)(wait * 1e6) : PUBLISHER_PAUSE_MICROSECONDS);
        }
        for (int i = 0; i < n; i++) {
            connection_t *c = &publishers[i].c;
            pfds[i] = (struct pollfd){.fd = c->fd, .events = POLLIN | (c->out_off == c->out_len ? 0 : POLLOUT)};
        }
        if (!tls_pending) poll(pfds, (nfds_t)n, drained ? 0 : 100);
        read_publishers(pfds, 1);
    }
    t_acks_end = now();
    publisher_cpu = thread_cpu() - cpu0;
    return NULL;
}

/* ---- latency ---- */

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The latency percentiles, in microseconds, as more members of the JSON object. */
static void print_latencies(void) {
    static const double quantiles[] = {0.5, 0.9, 0.99, 0.999};
    static const char *names[] = {"p50", "p90", "p99", "p999"};
    qsort(latencies, (size_t)latency_count, sizeof *latencies, compare_u64);
    printf(", \"latency_samples\": %ld, \"latency_samples_dropped\": %ld", latency_count, latency_dropped);
    for (int q = 0; q < 4; q++) {
        /* nearest rank: the smallest sample with at least that share of the samples at or below it */
        long rank = (long)(quantiles[q] * (double)latency_count + 0.999999999);
        double value = latency_count ? (double)latencies[(rank > 0 ? rank : 1) - 1] / 1e3 : 0;
        printf(", \"latency_%s_us\": %.1f", names[q], value);
    }
    printf(", \"latency_max_us\": %.1f", latency_count ? (double)latencies[latency_count - 1] / 1e3 : 0);
}

/* ---- main ---- */

static void usage(void) {
    fprintf(stderr,
            "usage: mqttload [--host IP] [--port N] [--tls --cafile FILE [--servername NAME]]\n"
            "                [--subscribers K] [--qos 0|1] [--size BYTES] [--count N] [--duration SECONDS]\n"
            "                [--window N] [--protocol 4|5] [--topic T] [--client-prefix P]\n"
            "                [--max-lead DELIVERIES] [--write-batch BYTES] [--fanout-pause-us N]\n"
            "                [--idle-timeout SECONDS] [--timeout SECONDS] [--persistent]\n"
            "                [--publishers P] [--sub-port N] [--rate MESSAGES_PER_S] [--latency [--latency-samples N]]\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option longopts[] = {
        {"host", 1, 0, 'h'},       {"port", 1, 0, 'p'},      {"tls", 0, 0, 't'},
        {"cafile", 1, 0, 'c'},     {"servername", 1, 0, 'n'}, {"subscribers", 1, 0, 'k'},
        {"qos", 1, 0, 'q'},        {"size", 1, 0, 's'},      {"count", 1, 0, 'N'},
        {"duration", 1, 0, 'd'},   {"window", 1, 0, 'w'},    {"protocol", 1, 0, 'V'},
        {"topic", 1, 0, 'T'},      {"client-prefix", 1, 0, 'P'}, {"max-lead", 1, 0, 'L'}, {"write-batch", 1, 0, 'B'}, {"fanout-pause-us", 1, 0, 'F'},  {"idle-timeout", 1, 0, 'i'},
        {"timeout", 1, 0, 'x'},    {"persistent", 0, 0, 'S'}, {"publishers", 1, 0, 'm'},
        {"sub-port", 1, 0, 'o'},   {"rate", 1, 0, 'r'},      {"latency", 0, 0, 'l'},
        {"latency-samples", 1, 0, 'a'}, {0, 0, 0, 0},
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
        case 'm': opt.publishers = atoi(optarg); break;
        case 'o': opt.sub_port = atoi(optarg); break;
        case 'r': opt.rate = atof(optarg); break;
        case 'l': opt.latency = 1; break;
        case 'a': opt.latency_samples = atol(optarg); break;
        default: usage();
        }
    }
    if (opt.qos < 0 || opt.qos > 1 || opt.subscribers < 1 || opt.size < 0 || opt.size > 65536 ||
        (opt.protocol != 4 && opt.protocol != 5) || opt.write_batch < 1 || opt.window < 1 || opt.window > 65535 ||
        (opt.count <= 0 && opt.duration <= 0) || (opt.tls && !opt.cafile) || opt.publishers < 1 ||
        opt.rate < 0 || opt.latency_samples < 1 || (opt.publishers > 1 && opt.size < PUBLISHER_OFFSET + 4) ||
        (opt.latency && opt.size < STAMPED_SIZE))
        usage();
    if (opt.sub_port == 0) opt.sub_port = opt.port;
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)opt.timeout); /* a hard bound, whatever the broker does */

    if (opt.tls) {
        tls_context = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_min_proto_version(tls_context, TLS1_2_VERSION);
        SSL_CTX_set_verify(tls_context, SSL_VERIFY_PEER, NULL);
        if (SSL_CTX_load_verify_locations(tls_context, opt.cafile, NULL) != 1) die("cannot load CA file %s", opt.cafile);
    }

    int k = opt.subscribers, n = opt.publishers;
    connection_t *subs = calloc((size_t)k, sizeof *subs);
    publishers = calloc((size_t)n, sizeof *publishers);
    subscriber_received = calloc((size_t)k, sizeof *subscriber_received);
    subscriber_expected = calloc((size_t)k, sizeof *subscriber_expected);
    if (opt.latency && !(latencies = malloc((size_t)opt.latency_samples * sizeof *latencies))) die("out of memory");
    char client_id[256], filter[320];
    for (int i = 0; i < k; i++) {
        connect_socket(&subs[i], opt.sub_port);
        snprintf(client_id, sizeof client_id, "%s-sub-%d", opt.client_prefix, i);
        queue_connect(&subs[i], client_id, 65535, opt.persistent);
        if (n > 1) {
            /* Subscriber i hears the publishers whose number is i modulo K. */
            snprintf(filter, sizeof filter, "%s/%d/+", opt.topic, i);
            subs[i].next_sequences = calloc((size_t)n, sizeof *subs[i].next_sequences);
        }
        queue_subscribe(&subs[i], n > 1 ? filter : opt.topic);
        flush(&subs[i]);
    }
    for (int i = 0; i < k; i++) pump_until(&subs[i], is_subacked, "SUBACK");
    for (int i = 0; i < n; i++) {
        publisher_t *pub = &publishers[i];
        connect_socket(&pub->c, opt.port);
        if (n > 1) {
            snprintf(client_id, sizeof client_id, "%s-pub-%d", opt.client_prefix, i);
            snprintf(pub->topic, sizeof pub->topic, "%s/%d/%d", opt.topic, i % k, i);
            pub->subscriber = i % k;
        } else {
            snprintf(client_id, sizeof client_id, "%s-pub", opt.client_prefix);
            snprintf(pub->topic, sizeof pub->topic, "%s", opt.topic);
            pub->subscriber = -1;
        }
        prepare_publish(pub);
        queue_connect(&pub->c, client_id, 65535, 0);
        flush(&pub->c);
    }
    for (int i = 0; i < n; i++) pump_until(&publishers[i].c, is_connacked, "CONNACK");

    const char *tls_version = opt.tls ? SSL_get_version(publishers[0].c.ssl) : "";
    const char *tls_cipher = opt.tls ? SSL_get_cipher_name(publishers[0].c.ssl) : "";
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
    pthread_create(&thread, NULL, publisher_main, NULL);

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
            for (int i = 0; i < k && n > 1; i++) atomic_store(&subscriber_received[i], subs[i].received);
        }
        if (atomic_load(&publisher_finished)) {
            expected = atomic_load(&total_sent);
            int all = 1;
            for (int i = 0; i < k && all; i++)
                all = subs[i].received >= (n > 1 ? subscriber_expected[i] : expected);
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
    uint64_t sequence_errors = 0, expected_deliveries = n > 1 ? 0 : expected * (uint64_t)k, acked = 0;
    for (int i = 0; i < k; i++) {
        received_total += subs[i].received;
        sequence_errors += subs[i].sequence_errors;
        if (n > 1) expected_deliveries += subscriber_expected[i];
    }
    for (int i = 0; i < n; i++) acked += publishers[i].c.acked;
    double elapsed = t_last_receive > t_first_publish ? t_last_receive - t_first_publish : 0;
    printf("{\"subscribers\": %d, \"qos\": %d, \"size\": %d, \"protocol\": %d, \"tls\": %s, "
           "\"tls_version\": \"%s\", \"tls_cipher\": \"%s\", "
           "\"sent\": %llu, \"acked\": %llu, \"received\": %llu, \"expected\": %llu, \"complete\": %s, \"sequence_errors\": %llu, "
           "\"elapsed_s\": %.6f, \"publish_s\": %.6f, \"acks_s\": %.6f, \"deliveries_per_s\": %.1f, "
           "\"publisher_cpu_s\": %.4f, \"subscriber_cpu_s\": %.4f",
           k, opt.qos, opt.size, opt.protocol, opt.tls ? "true" : "false", tls_version, tls_cipher,
           (unsigned long long)expected, (unsigned long long)acked, (unsigned long long)received_total,
           (unsigned long long)expected_deliveries, complete ? "true" : "false",
           (unsigned long long)sequence_errors, elapsed,
           t_publish_end ? t_publish_end - t_first_publish : 0, t_acks_end ? t_acks_end - t_first_publish : 0,
           elapsed > 0 ? (double)received_total / elapsed : 0.0, publisher_done ? publisher_cpu : 0.0,
           subscriber_cpu);
    if (n > 1) printf(", \"publishers\": %d", n);
    if (opt.latency) print_latencies();
    printf("}\n");
    fflush(stdout);
    _exit(complete ? 0 : 3);
}
