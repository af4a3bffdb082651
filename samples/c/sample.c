/* What the two Eclipse Paho C samples share; see sample.h. */

#include "sample.h"

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

static const char *const CONNACK_REFUSALS[] = {
    "accepted",
    "unacceptable protocol version",
    "client identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
};

/* Every option is a flag or an environment variable (the flag wins), as in every certmq sample. */
struct option_spec {
    const char *name;
    const char *variable;
    const char *help;
    const char *fallback;
    int mutual_only;
};

static const struct option_spec OPTIONS[] = {
    {"host", "MQTT_HOST", "broker host name, as written in its certificate", "localhost", 0},
    {"port", "MQTT_PORT", "MQTT over TLS port", "8883", 0},
    {"ca-file", "MQTT_CA_FILE", "CA certificate that signed the broker's certificate (PEM)", NULL, 0},
    {"chain-file", "MQTT_CHAIN_FILE", "device certificate followed by its CA certificate (PEM)", NULL, 1},
    {"key-file", "MQTT_KEY_FILE", "the device certificate's private key (PEM)", NULL, 1},
    {"access-key-id", "MQTT_ACCESS_KEY_ID", "AccessKeyId for Signature credentials", NULL, 0},
    {"access-key-secret", "MQTT_ACCESS_KEY_SECRET", "AccessKeySecret for Signature credentials", NULL, 0},
    {"instance-id", "MQTT_INSTANCE_ID", "instance id for Signature credentials", NULL, 0},
    {"client-id", "MQTT_CLIENT_ID", "MQTT client id, GroupID@@@DeviceID", "GID_demo@@@device-0001", 0},
    {"topic", "MQTT_TOPIC", "topic to subscribe and publish to", "demo/hello", 0},
    {"timeout", "MQTT_TIMEOUT", "seconds to wait for the whole round trip", "10", 0},
};
#define OPTION_COUNT (sizeof OPTIONS / sizeof OPTIONS[0])

static void usage_error(const char *message, const char *detail)
{
    fprintf(stderr, "error: %s%s (--help lists the options)\n", message, detail ? detail : "");
    exit(2);
}

static void print_help(const char *program, int mutual)
{
    printf("usage: %s [options]\n\n", program);
    printf("Connect to certmq over TLS, subscribe to a topic, publish one message to it and wait for it to come back.\n\n");
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        if (OPTIONS[i].mutual_only && !mutual)
            continue;
        char flag[64];
        snprintf(flag, sizeof flag, "--%s %s", OPTIONS[i].name, OPTIONS[i].variable);
        printf("  %-44s%s", flag, OPTIONS[i].help);
        if (OPTIONS[i].fallback)
            printf(" (default: %s)", OPTIONS[i].fallback);
        printf("\n");
    }
}

static int parse_number(const char *text, int *number)
{
    char *end;
    long value = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || value <= 0 || value > 65535)
        return 0;
    *number = (int)value;
    return 1;
}

void parse_options(int argc, char **argv, int mutual, struct sample_options *options)
{
    const char *values[OPTION_COUNT];
    struct option long_options[OPTION_COUNT + 2];
    size_t count = 0;
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const char *from_environment = getenv(OPTIONS[i].variable);
        values[i] = from_environment && *from_environment ? from_environment : OPTIONS[i].fallback;
        if (OPTIONS[i].mutual_only && !mutual)
            continue;
        long_options[count++] = (struct option){OPTIONS[i].name, required_argument, NULL, (int)i};
    }
    long_options[count++] = (struct option){"help", no_argument, NULL, 'h'};
    long_options[count] = (struct option){NULL, 0, NULL, 0};

    int found;
    while ((found = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        if (found == 'h') {
            print_help(argv[0], mutual);
            exit(0);
        }
        if (found == '?')
            usage_error("unknown option", NULL);
        values[found] = optarg;
    }
    if (optind < argc)
        usage_error("unexpected argument ", argv[optind]);

    memset(options, 0, sizeof *options);
    options->host = values[0];
    options->ca_file = values[2];
    options->chain_file = mutual ? values[3] : NULL;
    options->key_file = mutual ? values[4] : NULL;
    options->access_key_id = values[5];
    options->access_key_secret = values[6];
    options->instance_id = values[7];
    options->client_id = values[8];
    options->topic = values[9];
    if (!parse_number(values[1], &options->port) || !parse_number(values[10], &options->timeout))
        usage_error("--port and --timeout are numbers", NULL);
    if (!options->ca_file)
        usage_error("--ca-file (or MQTT_CA_FILE) is required", NULL);
    if (mutual && !options->chain_file)
        usage_error("--chain-file (or MQTT_CHAIN_FILE) is required", NULL);
    if (mutual && !options->key_file)
        usage_error("--key-file (or MQTT_KEY_FILE) is required", NULL);
    int given = !!options->access_key_id + !!options->access_key_secret + !!options->instance_id;
    if (given != 0 && given != 3)
        usage_error("--access-key-id, --access-key-secret and --instance-id go together", NULL);
}

/* ApsaraMQ's Signature mode: Base64(HMAC-SHA1(key=AccessKeySecret, msg=ClientId)). */
static void signature_password(const char *secret, const char *client_id, char *password, size_t size)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    HMAC(EVP_sha1(), secret, (int)strlen(secret), (const unsigned char *)client_id, strlen(client_id), digest,
         &length);
    if (size < 4 * ((length + 2) / 3) + 1) {
        password[0] = '\0';
        return;
    }
    EVP_EncodeBlock((unsigned char *)password, digest, (int)length);
}

/* The first error OpenSSL reports during the handshake, to say what went wrong. */
struct tls_error {
    char text[512];
};

/* OpenSSL writes "<thread>:error:<code>:<library>:<function>:<reason>:<file>:<line>:"; keep the reason. */
static int remember_tls_error(const char *text, size_t length, void *context)
{
    struct tls_error *error = context;
    if (error->text[0] != '\0')
        return 0;
    char line[sizeof error->text];
    if (length >= sizeof line)
        length = sizeof line - 1;
    memcpy(line, text, length);
    line[length] = '\0';
    line[strcspn(line, "\n")] = '\0';
    const char *reason = line;
    for (int field = 0; field < 5 && strchr(reason, ':'); field++)
        reason = strchr(reason, ':') + 1;
    size_t reason_length = strcspn(reason, ":");
    if (reason_length == 0) {
        reason = line;
        reason_length = strlen(line);
    }
    snprintf(error->text, sizeof error->text, "%.*s", (int)reason_length, reason);
    return 0;
}

/* Paho C checks the broker's host name after the handshake and, when it does not match, fails
 * the connection without an OpenSSL error. What it traces tells that case apart (Paho C 1.3):
 * "X509_check_host for hostname ... failed", then "rc from X509_check_ip_asc is N", where
 * N = 1 means the host, an IP address, matched after all. */
static struct {
    int host_check_failed;
    int ip_check_result; /* -100: not traced */
} name_check = {0, -100};

static void remember_name_check(enum MQTTCLIENT_TRACE_LEVELS level, char *message)
{
    (void)level;
    const char *ip_result = strstr(message, "rc from X509_check_ip_asc is ");
    if (strstr(message, "X509_check_host for hostname") && strstr(message, "failed"))
        name_check.host_check_failed = 1;
    else if (ip_result)
        name_check.ip_check_result = atoi(ip_result + strlen("rc from X509_check_ip_asc is "));
}

static int host_name_mismatch(void)
{
    return name_check.host_check_failed && name_check.ip_check_result != 1;
}

/* Paho C reports a refused TCP connection and one the broker closed after the handshake alike
 * (MQTTCLIENT_FAILURE); a plain TCP connection tells the two apart. Returns 0, an errno, or -1
 * when the host name does not resolve. */
static int tcp_connect_error(const char *host, int port)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *addresses = NULL;
    if (getaddrinfo(host, service, &hints, &addresses) != 0)
        return -1;
    int error = ECONNREFUSED;
    for (struct addrinfo *address = addresses; address; address = address->ai_next) {
        int socket_fd = socket(address->ai_family, address->ai_socktype, address->ai_protocol);
        if (socket_fd < 0)
            continue;
        error = connect(socket_fd, address->ai_addr, address->ai_addrlen) == 0 ? 0 : errno;
        close(socket_fd);
        if (error == 0)
            break;
    }
    freeaddrinfo(addresses);
    return error;
}

/* Names the first TLS file that cannot be read, before any connection is made. */
static const char *unreadable_file(const MQTTClient_SSLOptions *tls, int *error)
{
    const char *files[] = {tls->trustStore, tls->keyStore, tls->privateKey};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (files[i] == NULL)
            continue;
        FILE *file = fopen(files[i], "r");
        if (file == NULL) {
            *error = errno;
            return files[i];
        }
        fclose(file);
    }
    return NULL;
}

static long milliseconds_left(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

static int fail(MQTTClient *client, const char *message, const char *detail, const char *hint)
{
    fprintf(stderr, "error: %s%s%s\n", message, detail ? detail : "", hint ? hint : "");
    if (*client) {
        if (MQTTClient_isConnected(*client))
            MQTTClient_disconnect(*client, 1000);
        MQTTClient_destroy(client);
    }
    return 1;
}

int run_sample(const struct sample_options *options, MQTTClient_SSLOptions *tls, const char *mode)
{
    int mutual = strcmp(mode, "mutual TLS") == 0;
    char uri[600], address[560], message_text[200], password[64];
    snprintf(address, sizeof address, "%s:%d", options->host, options->port);
    snprintf(uri, sizeof uri, "ssl://%s", address);
    snprintf(message_text, sizeof message_text, "hello from the C sample (%s)", mode);

    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += options->timeout;

    MQTTClient client = NULL;
    int file_error = 0;
    const char *unreadable = unreadable_file(tls, &file_error);
    if (unreadable) {
        char context[600];
        snprintf(context, sizeof context, "cannot load the TLS files: %s: ", unreadable);
        return fail(&client, context, strerror(file_error), NULL);
    }
    if (MQTTClient_create(&client, uri, options->client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL) != MQTTCLIENT_SUCCESS)
        return fail(&client, "cannot create the client for ", uri, NULL);

    struct tls_error tls_error = {{0}};
    tls->ssl_error_cb = remember_tls_error;
    tls->ssl_error_context = &tls_error;

    MQTTClient_connectOptions connect_options = MQTTClient_connectOptions_initializer;
    connect_options.MQTTVersion = MQTTVERSION_3_1_1;
    connect_options.keepAliveInterval = 30;
    connect_options.cleansession = 1;
    connect_options.connectTimeout = options->timeout;
    connect_options.ssl = tls;
    char username[512];
    if (options->access_key_id) {
        snprintf(username, sizeof username, "Signature|%s|%s", options->access_key_id, options->instance_id);
        signature_password(options->access_key_secret, options->client_id, password, sizeof password);
        connect_options.username = username;
        connect_options.password = password;
    }

    MQTTClient_setTraceCallback(remember_name_check);
    MQTTClient_setTraceLevel(MQTTCLIENT_TRACE_MINIMUM);
    int rc = MQTTClient_connect(client, &connect_options);
    MQTTClient_setTraceCallback(NULL);
    if (rc > 0 && rc <= 5) {
        char refusal[120];
        snprintf(refusal, sizeof refusal, "%s (CONNACK return code %d)", CONNACK_REFUSALS[rc], rc);
        const char *hint = rc == 4   ? ": check the AccessKey pair and the instance id"
                           : rc == 5 ? ": `certmq decisions --limit 5` on the broker says why"
                                     : NULL;
        return fail(&client, "the broker refused the connection: ", refusal, hint);
    }
    if (rc != MQTTCLIENT_SUCCESS) {
        char context[700];
        if (tls_error.text[0] != '\0') {
            snprintf(context, sizeof context, "TLS handshake with %s failed: ", address);
            const char *hint = strstr(tls_error.text, "certificate verify failed")
                                   ? " (is --ca-file the CA that signed the broker's certificate, "
                                     "data/server-ca/ca.pem, and --host a name in that certificate, "
                                     "e.g. localhost?)"
                               : mutual ? " (the broker may have refused the device certificate: is its CA registered?)"
                                        : NULL;
            return fail(&client, context, tls_error.text, hint);
        }
        if (host_name_mismatch()) {
            snprintf(context, sizeof context, "TLS handshake with %s failed: the broker's certificate does not name %s",
                     address, options->host);
            return fail(&client, context, NULL, " (connect with a --host the broker's certificate names, e.g. localhost)");
        }
        if (milliseconds_left(&deadline) <= 0) {
            snprintf(context, sizeof context, "timed out after %d s waiting for the broker to accept the connection",
                     options->timeout);
            return fail(&client, context, NULL, NULL);
        }
        int tcp_error = tcp_connect_error(options->host, options->port);
        if (tcp_error == -1)
            snprintf(context, sizeof context, "cannot connect to %s: unknown host name", address);
        else if (tcp_error == ECONNREFUSED)
            snprintf(context, sizeof context, "cannot connect to %s: connection refused (is certmq running?)",
                     address);
        else if (tcp_error != 0)
            snprintf(context, sizeof context, "cannot connect to %s: %s", address, strerror(tcp_error));
        else if (mutual)
            snprintf(context, sizeof context,
                     "the broker closed the connection before accepting it: it did not accept the device "
                     "certificate (is its CA registered?); `certmq decisions --limit 5` on the broker says why");
        else
            snprintf(context, sizeof context,
                     "the broker closed the connection before accepting it: if it is in mutual mode, it wants a "
                     "device certificate (use build/mutual)");
        return fail(&client, context, NULL, NULL);
    }
    printf("connected to %s as %s (%s)\n", address, options->client_id, mode);

    rc = MQTTClient_subscribe(client, options->topic, 1);
    if (rc != MQTTCLIENT_SUCCESS)
        return fail(&client, "the broker refused the subscription to ", options->topic, NULL);
    printf("subscribed to %s\n", options->topic);

    MQTTClient_deliveryToken token;
    rc = MQTTClient_publish(client, options->topic, (int)strlen(message_text), message_text, 1, 0, &token);
    if (rc == MQTTCLIENT_SUCCESS)
        rc = MQTTClient_waitForCompletion(client, token, (unsigned long)milliseconds_left(&deadline));
    if (rc != MQTTCLIENT_SUCCESS)
        return fail(&client, "publishing failed: ", MQTTClient_strerror(rc), NULL);
    printf("published to %s: %s\n", options->topic, message_text);
    fflush(stdout);

    for (;;) {
        long left = milliseconds_left(&deadline);
        if (left <= 0) {
            char context[200];
            snprintf(context, sizeof context, "timed out after %d s waiting for the message to come back",
                     options->timeout);
            return fail(&client, context, NULL, NULL);
        }
        char *topic_name = NULL;
        int topic_length = 0;
        MQTTClient_message *message = NULL;
        rc = MQTTClient_receive(client, &topic_name, &topic_length, &message, (unsigned long)left);
        if (rc != MQTTCLIENT_SUCCESS && rc != MQTTCLIENT_TOPICNAME_TRUNCATED)
            return fail(&client, "the broker closed the connection: ", MQTTClient_strerror(rc), NULL);
        if (message == NULL)
            continue;
        int ours = message->payloadlen == (int)strlen(message_text)
                   && memcmp(message->payload, message_text, (size_t)message->payloadlen) == 0;
        printf("received on %.*s: %.*s\n", topic_length ? topic_length : (int)strlen(topic_name), topic_name,
               message->payloadlen, (const char *)message->payload);
        MQTTClient_freeMessage(&message);
        MQTTClient_free(topic_name);
        if (ours)
            break;
    }
    MQTTClient_disconnect(client, 1000);
    MQTTClient_destroy(&client);
    return 0;
}
