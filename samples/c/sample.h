/* What the two Eclipse Paho C samples share: their options, the Signature credentials of
 * ApsaraMQ's conventions, and one round trip (connect, subscribe, publish, wait for the message
 * to come back). one_way.c and mutual.c differ only in the TLS options they hand to run_sample(). */

#ifndef CERTMQ_SAMPLE_H
#define CERTMQ_SAMPLE_H

#include <MQTTClient.h>

struct sample_options {
    const char *host;
    int port;
    const char *ca_file;
    const char *chain_file; /* mutual only */
    const char *key_file;   /* mutual only */
    const char *access_key_id;
    const char *access_key_secret;
    const char *instance_id;
    const char *client_id;
    const char *topic;
    int timeout; /* seconds, for the whole round trip */
};

/* Reads the options from the command line and the environment (the flag wins); exits with
 * status 2 and a one-line message when one is missing or wrong, 0 after --help. */
void parse_options(int argc, char **argv, int mutual, struct sample_options *options);

/* Connects with these TLS options, subscribes, publishes, waits for the message; returns the
 * process exit status: 0 when the message came back, 1 after printing a one-line error. */
int run_sample(const struct sample_options *options, MQTTClient_SSLOptions *tls, const char *mode);

#endif
