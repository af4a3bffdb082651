package certmq.samples;

/**
 * Mutual TLS: the client verifies certmq's server certificate with the CA file, and presents
 * its device certificate chain (device certificate + CA certificate) and key. Signature
 * credentials are optional in mutual mode; when given, they must be valid.
 *
 * <pre>
 * java -cp target/certmq-samples.jar certmq.samples.Mutual --ca-file data/server-ca/ca.pem \
 *     --chain-file device-0001/chain.pem --key-file device-0001/device.key
 * </pre>
 */
public final class Mutual {
    private Mutual() {}

    public static void main(String[] args) {
        SampleOptions options = SampleOptions.parse("certmq.samples.Mutual", args, true);
        RoundTrip.run(
                options,
                () -> PemFiles.mutual(options.caFile, options.chainFile, options.keyFile),
                RoundTrip.MUTUAL);
    }
}
