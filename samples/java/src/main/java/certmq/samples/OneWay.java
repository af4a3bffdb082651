package certmq.samples;

/**
 * One-way TLS: the client verifies certmq's server certificate with the CA file, and
 * authenticates with Signature credentials (an AccessKey pair and the instance id).
 *
 * <pre>
 * java -cp target/certmq-samples.jar certmq.samples.OneWay --ca-file data/server-ca/ca.pem \
 *     --access-key-id LTAI... --access-key-secret ... --instance-id mqtt-local-...
 * </pre>
 */
public final class OneWay {
    private OneWay() {}

    public static void main(String[] args) {
        SampleOptions options = SampleOptions.parse("certmq.samples.OneWay", args, false);
        RoundTrip.run(options, () -> PemFiles.oneWay(options.caFile), RoundTrip.ONE_WAY);
    }
}
