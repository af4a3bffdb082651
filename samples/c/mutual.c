/* Mutual TLS: the client verifies certmq's server certificate with the CA file, and presents
 * its device certificate chain (device certificate + CA certificate) and key. Signature
 * credentials are optional in mutual mode; when given, they must be valid.
 *
 *   build/mutual --ca-file data/server-ca/ca.pem \
 *     --chain-file device-0001/chain.pem --key-file device-0001/device.key
 */

#include "sample.h"

int main(int argc, char **argv)
{
    struct sample_options options;
    parse_options(argc, argv, 1, &options);

    MQTTClient_SSLOptions tls = MQTTClient_SSLOptions_initializer;
    tls.trustStore = options.ca_file;   /* trust only the CA that signed the broker's certificate */
    tls.disableDefaultTrustStore = 1;
    tls.enableServerCertAuth = 1;       /* check the broker's certificate chain */
    tls.verify = 1;                     /* and that it names the host we connect to */
    tls.keyStore = options.chain_file;  /* what the device presents: its certificate + its CA */
    tls.privateKey = options.key_file;  /* and the device certificate's key */

    return run_sample(&options, &tls, "mutual TLS");
}
