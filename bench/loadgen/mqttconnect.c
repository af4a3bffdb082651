/*
 * mqttconnect: the connection generator of the certmq connection benchmark.
 *
 * Opens MQTT over TLS connections with a client certificate, one after another with
 * a few in flight, and measures nothing but its own side: each connection is a full
 * TLS handshake (no session is ever resumed), then CONNECT, CONNACK, DISCONNECT and
 * close. The broker's CPU time is measured by the caller around the run.
 *
 * The device identities (certificate and key, PEM, one after the other) are read and
 * parsed before the run, so that no file is read while it is measured. Connection i
 * uses identity i modulo the number of identities: one identity connects again and
 * again, or N identities connect once each.
 *
 * Protocol with the caller: print "READY" when the identities are loaded, wait for
 * one line on stdin, run, and print one JSON object on stdout.
 *
 * Build: gcc -O2 -o mqttconnect mqttconnect.c -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONCURRENCY 64
#define ERROR_TEXT 300

typedef struct {
    const char *host;
    int port;
    const char *cafile;
    const char *servername;
    const char *identities;
    long connections; /* 0: one per identity */
    int concurrency;
    int protocol; /* 4 = MQTT 3.1.1, 5 = MQTT 5.0 */
    const char *client_prefix;
    double connection_timeout;
} options_t;

typedef struct {
    X509 *certificate;
    EVP_PKEY *key;
} identity_t;

typedef enum { FREE, CONNECTING, HANDSHAKING, AWAITING_CONNACK } state_t;

typedef struct {
    state_t state;
    int fd;
    SSL *ssl;
    long number;
    double started;
    unsigned char in[64];
    size_t in_len;
} slot_t;

static options_t opt = {
    .host = "127.0.0.1", .port = 8883, .servername = "localhost", .connections = 0,
    .concurrency = 4, .protocol = 4, .client_prefix = "mqttconnect", .connection_timeout = 10.0,
};
static SSL_CTX *tls_context;
static identity_t *identities;
static long identity_count;
static int epoll_fd;

static long succeeded, refused, failed, resumed;
static char first_error[ERROR_TEXT];
static char tls_protocol[32], tls_cipher[64], tls_group[32];
static double *latencies; /* seconds from connect() to CONNACK, per successful connection */

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mqttconnect: ");
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

static double process_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void load_identities(const char *path) {
    BIO *bio = BIO_new_file(path, "r");
    if (!bio) die("cannot read %s", path);
    long capacity = 16;
    identities = malloc(sizeof *identities * capacity);
    for (;;) {
        X509 *certificate = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (!certificate) {
            ERR_clear_error(); /* end of file */
            break;
        }
        EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        if (!key) die("%s: certificate %ld has no private key after it", path, identity_count + 1);
        if (identity_count == capacity) {
            capacity *= 2;
            identities = realloc(identities, sizeof *identities * capacity);
            if (!identities) die("out of memory");
        }
        identities[identity_count].certificate = certificate;
        identities[identity_count].key = key;
        identity_count++;
    }
    BIO_free(bio);
    if (identity_count == 0) die("%s holds no certificate", path);
}

static void make_tls_context(void) {
    tls_context = SSL_CTX_new(TLS_client_method());
    if (!tls_context) die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(tls_context, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(tls_context, TLS1_3_VERSION);
    /* Every connection is a full handshake: no session cache, no tickets offered back. */
    SSL_CTX_set_session_cache_mode(tls_context, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(tls_context, SSL_OP_NO_TICKET);
    SSL_CTX_set_verify(tls_context, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(tls_context, opt.cafile, NULL) != 1)
        die("cannot load the server CA %s", opt.cafile);
}

/* ---- errors ---- */

static void note_error(long number, const char *what) {
    if (first_error[0]) return;
    char detail[200] = "";
    unsigned long code = ERR_peek_last_error();
    if (code) ERR_error_string_n(code, detail, sizeof detail);
    snprintf(first_error, sizeof first_error, "connection %ld: %s%s%s", number, what, detail[0] ? ": " : "",
             detail);
}

static void release(slot_t *s) {
    if (s->fd >= 0) {
        epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
    }
    if (s->ssl) SSL_free(s->ssl);
    s->fd = -1;
    s->ssl = NULL;
    s->state = FREE;
    ERR_clear_error();
}

static void fail(slot_t *s, const char *what) {
    failed++;
    note_error(s->number, what);
    release(s);
}

static void watch(slot_t *s, unsigned events) {
    struct epoll_event event = {.events = events, .data.ptr = s};
    epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s->fd, &event);
}

/* ---- one connection ---- */

static void start(slot_t *s, long number) {
    s->number = number;
    s->in_len = 0;
    s->started = now();
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(opt.port)};
    if (inet_pton(AF_INET, opt.host, &address.sin_addr) != 1) die("bad IPv4 address %s", opt.host);
    s->state = CONNECTING;
    struct epoll_event event = {.events = EPOLLOUT, .data.ptr = s};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s->fd, &event);
    if (connect(s->fd, (struct sockaddr *)&address, sizeof address) != 0 && errno != EINPROGRESS) {
        char what[100];
        snprintf(what, sizeof what, "connect: %s", strerror(errno));
        fail(s, what);
    }
}

static void send_connect(slot_t *s) {
    char client_id[128];
    int id_len = snprintf(client_id, sizeof client_id, "%s-%ld", opt.client_prefix, s->number);
    unsigned char packet[200];
    size_t n = 0;
    packet[n++] = 0x10;
    size_t remaining = 10 + (opt.protocol == 5 ? 1 : 0) + 2 + (size_t)id_len;
    packet[n++] = (unsigned char)remaining; /* < 128 */
    memcpy(packet + n, "\0\4MQTT", 6);
    n += 6;
    packet[n++] = (unsigned char)opt.protocol;
    packet[n++] = 0x02; /* clean session / clean start */
    packet[n++] = 0;
    packet[n++] = 60; /* keep alive */
    if (opt.protocol == 5) packet[n++] = 0; /* no properties */
    packet[n++] = 0;
    packet[n++] = (unsigned char)id_len;
    memcpy(packet + n, client_id, (size_t)id_len);
    n += (size_t)id_len;
    if (SSL_write(s->ssl, packet, (int)n) != (int)n) {
        fail(s, "could not send CONNECT");
        return;
    }
    s->state = AWAITING_CONNACK;
    watch(s, EPOLLIN);
}

static void finish(slot_t *s) {
    static const unsigned char disconnect[2] = {0xe0, 0x00};
    if (SSL_write(s->ssl, disconnect, 2) != 2) {
        fail(s, "could not send DISCONNECT");
        return;
    }
    SSL_shutdown(s->ssl); /* close_notify, without waiting for the broker's */
    latencies[succeeded++] = now() - s->started;
    release(s);
}

static void handshake(slot_t *s) {
    int r = SSL_connect(s->ssl);
    if (r != 1) {
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            watch(s, EPOLLIN);
        } else if (e == SSL_ERROR_WANT_WRITE) {
            watch(s, EPOLLOUT);
        } else {
            fail(s, "TLS handshake failed");
        }
        return;
    }
    if (SSL_session_reused(s->ssl)) resumed++;
    if (!tls_protocol[0]) {
        snprintf(tls_protocol, sizeof tls_protocol, "%s", SSL_get_version(s->ssl));
        snprintf(tls_cipher, sizeof tls_cipher, "%s", SSL_get_cipher_name(s->ssl));
        int group = SSL_get_negotiated_group(s->ssl);
        const char *name = OBJ_nid2sn(group & ~TLSEXT_nid_unknown);
        snprintf(tls_group, sizeof tls_group, "%s", name ? name : "unknown");
    }
    send_connect(s);
}

static void connected(slot_t *s) {
    int error = 0;
    socklen_t length = sizeof error;
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &error, &length);
    if (error) {
        char what[100];
        snprintf(what, sizeof what, "connect: %s", strerror(error));
        fail(s, what);
        return;
    }
    const identity_t *identity = &identities[s->number % identity_count];
    s->ssl = SSL_new(tls_context);
    SSL_set_fd(s->ssl, s->fd);
    SSL_set_tlsext_host_name(s->ssl, opt.servername);
    SSL_set1_host(s->ssl, opt.servername);
    if (SSL_use_certificate(s->ssl, identity->certificate) != 1 ||
        SSL_use_PrivateKey(s->ssl, identity->key) != 1)
        die("identity %ld: the key does not match the certificate", s->number % identity_count);
    s->state = HANDSHAKING;
    handshake(s);
}

static void readable(slot_t *s) {
    for (;;) {
        int r = SSL_read(s->ssl, s->in + s->in_len, (int)(sizeof s->in - s->in_len));
        if (r <= 0) {
            int e = SSL_get_error(s->ssl, r);
            if (e == SSL_ERROR_WANT_READ) return;
            if (e == SSL_ERROR_WANT_WRITE) {
                watch(s, EPOLLOUT | EPOLLIN);
                return;
            }
            fail(s, e == SSL_ERROR_ZERO_RETURN ? "the broker closed the connection before CONNACK"
                                               : "read failed before CONNACK");
            return;
        }
        s->in_len += (size_t)r;
        if (s->in_len < 2) continue;
        if (s->in[0] != 0x20) {
            fail(s, "the first packet is not a CONNACK");
            return;
        }
        size_t length = s->in[1];
        if (s->in_len < 2 + length) continue;
        if (length < 2 || s->in[3] != 0) {
            refused++;
            char what[64];
            snprintf(what, sizeof what, "CONNACK refused the connection, code 0x%02x", length >= 2 ? s->in[3] : 0xff);
            note_error(s->number, what);
            release(s);
            return;
        }
        finish(s);
        return;
    }
}

static void serve(slot_t *s, unsigned events) {
    (void)events;
    switch (s->state) {
    case CONNECTING:
        connected(s);
        break;
    case HANDSHAKING:
        handshake(s);
        break;
    case AWAITING_CONNACK:
        readable(s);
        break;
    case FREE:
        break;
    }
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const double *sorted, long count, double share) {
    if (count == 0) return 0;
    long index = (long)(share * (double)(count - 1) + 0.5);
    return sorted[index];
}

static void usage(void) {
    fprintf(stderr,
            "usage: mqttconnect --port PORT --cafile SERVER_CA.pem --identities DEVICES.pem\n"
            "       [--host 127.0.0.1] [--servername localhost] [--connections N] [--concurrency K]\n"
            "       [--protocol 4|5] [--client-prefix P] [--connection-timeout SECONDS]\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option long_options[] = {
        {"host", required_argument, 0, 'h'},          {"port", required_argument, 0, 'p'},
        {"cafile", required_argument, 0, 'c'},        {"servername", required_argument, 0, 's'},
        {"identities", required_argument, 0, 'i'},    {"connections", required_argument, 0, 'n'},
        {"concurrency", required_argument, 0, 'k'},   {"protocol", required_argument, 0, 'P'},
        {"client-prefix", required_argument, 0, 'x'}, {"connection-timeout", required_argument, 0, 't'},
        {0, 0, 0, 0},
    };
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (option) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'c': opt.cafile = optarg; break;
        case 's': opt.servername = optarg; break;
        case 'i': opt.identities = optarg; break;
        case 'n': opt.connections = atol(optarg); break;
        case 'k': opt.concurrency = atoi(optarg); break;
        case 'P': opt.protocol = atoi(optarg); break;
        case 'x': opt.client_prefix = optarg; break;
        case 't': opt.connection_timeout = atof(optarg); break;
        default: usage();
        }
    }
    if (!opt.cafile || !opt.identities || opt.concurrency < 1 || opt.concurrency > MAX_CONCURRENCY ||
        (opt.protocol != 4 && opt.protocol != 5))
        usage();
    signal(SIGPIPE, SIG_IGN);
    load_identities(opt.identities);
    make_tls_context();
    long total = opt.connections > 0 ? opt.connections : identity_count;
    latencies = calloc((size_t)total, sizeof *latencies);
    epoll_fd = epoll_create1(0);
    slot_t slots[MAX_CONCURRENCY];
    for (int i = 0; i < opt.concurrency; i++) slots[i] = (slot_t){.state = FREE, .fd = -1};

    printf("READY\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 0;

    double cpu_before = process_cpu(), started = now();
    long next = 0;
    struct epoll_event events[MAX_CONCURRENCY];
    for (;;) {
        for (int i = 0; i < opt.concurrency && next < total; i++)
            if (slots[i].state == FREE) start(&slots[i], next++);
        int busy = 0;
        for (int i = 0; i < opt.concurrency; i++) busy += slots[i].state != FREE;
        if (!busy) break;
        int n = epoll_wait(epoll_fd, events, MAX_CONCURRENCY, 100);
        for (int i = 0; i < n; i++) serve(events[i].data.ptr, events[i].events);
        double t = now();
        for (int i = 0; i < opt.concurrency; i++)
            if (slots[i].state != FREE && t - slots[i].started > opt.connection_timeout)
                fail(&slots[i], "timed out");
    }
    double elapsed = now() - started, cpu = process_cpu() - cpu_before;

    qsort(latencies, (size_t)succeeded, sizeof *latencies, compare_doubles);
    printf("{\"connections\": %ld, \"succeeded\": %ld, \"refused\": %ld, \"failed\": %ld, \"resumed\": %ld, "
           "\"elapsed_s\": %.6f, \"client_cpu_s\": %.6f, \"latency_ms_p50\": %.3f, \"latency_ms_p99\": %.3f, "
           "\"identities\": %ld, \"concurrency\": %d, \"tls_protocol\": \"%s\", \"tls_cipher\": \"%s\", "
           "\"tls_group\": \"%s\", \"first_error\": \"",
           total, succeeded, refused, failed, resumed, elapsed, cpu, percentile(latencies, succeeded, 0.5) * 1e3,
           percentile(latencies, succeeded, 0.99) * 1e3, identity_count, opt.concurrency, tls_protocol,
           tls_cipher, tls_group);
    for (const char *p = first_error; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        putchar(*p >= ' ' ? *p : ' ');
    }
    printf("\"}\n");
    return 0;
}
