/* One-way TLS: the client verifies certmq's server certificate with the CA file, and
 * authenticates with Signature credentials (an AccessKey pair and the instance id).
 *
 *   build/one_way --ca-file data/server-ca/ca.pem \
 *     --access-key-id LTAI... --access-key-secret ... --instance-id mqtt-local-...
 */

#include "sample.h"

int main(int argc, char **argv)
{
    struct sample_options options;
    parse_options(argc, argv, 0, &options);

    MQTTClient_SSLOptions tls = MQTTClient_SSLOptions_initializer;
    tls.trustStore = options.ca_file;   /* trust only the CA that signed the broker's certificate */
    tls.disableDefaultTrustStore = 1;
    tls.enableServerCertAuth = 1;       /* check the broker's certificate chain */
    tls.verify = 1;                     /* and that it names the host we connect to */

    return run_sample(&options, &tls, "one-way TLS");
}
