package certmq.samples;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The options of both samples. Every option is a flag or an environment variable (the flag
 * wins), as in every certmq sample.
 */
public final class SampleOptions {
    public String host;
    public int port;
    public String caFile;
    public String chainFile; // mutual only
    public String keyFile; // mutual only
    public String accessKeyId;
    public String accessKeySecret;
    public String instanceId;
    public String clientId;
    public String topic;
    public int timeoutSeconds;

    private static final String[][] OPTIONS = {
        // flag, environment variable, help, default, "mutual" when only the mutual sample has it
        {"host", "MQTT_HOST", "broker host name, as written in its certificate", "localhost", ""},
        {"port", "MQTT_PORT", "MQTT over TLS port", "8883", ""},
        {"ca-file", "MQTT_CA_FILE", "CA certificate that signed the broker's certificate (PEM)", null, ""},
        {"chain-file", "MQTT_CHAIN_FILE", "device certificate followed by its CA certificate (PEM)", null, "mutual"},
        {"key-file", "MQTT_KEY_FILE", "the device certificate's private key (PEM)", null, "mutual"},
        {"access-key-id", "MQTT_ACCESS_KEY_ID", "AccessKeyId for Signature credentials", null, ""},
        {"access-key-secret", "MQTT_ACCESS_KEY_SECRET", "AccessKeySecret for Signature credentials", null, ""},
        {"instance-id", "MQTT_INSTANCE_ID", "instance id for Signature credentials", null, ""},
        {"client-id", "MQTT_CLIENT_ID", "MQTT client id, GroupID@@@DeviceID", "GID_demo@@@device-0001", ""},
        {"topic", "MQTT_TOPIC", "topic to subscribe and publish to", "demo/hello", ""},
        {"timeout", "MQTT_TIMEOUT", "seconds to wait for the whole round trip", "10", ""},
    };

    private SampleOptions() {}

    /** Exits with status 2 and a one-line message when an option is missing or wrong, 0 after --help. */
    public static SampleOptions parse(String program, String[] args, boolean mutual) {
        List<String[]> known = new ArrayList<>();
        Map<String, String> values = new LinkedHashMap<>();
        for (String[] option : OPTIONS) {
            if (option[4].equals("mutual") && !mutual) {
                continue;
            }
            known.add(option);
            String fromEnvironment = System.getenv(option[1]);
            values.put(option[0], fromEnvironment != null && !fromEnvironment.isEmpty() ? fromEnvironment : option[3]);
        }
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            if (arg.equals("--help") || arg.equals("-h")) {
                printHelp(program, known);
                System.exit(0);
            }
            String name = arg.startsWith("--") ? arg.substring(2) : "";
            String value = null;
            int equals = name.indexOf('=');
            if (equals >= 0) {
                value = name.substring(equals + 1);
                name = name.substring(0, equals);
            }
            if (!values.containsKey(name)) {
                usageError("unknown option " + arg);
            }
            if (value == null) {
                if (i + 1 >= args.length) {
                    usageError(arg + " needs a value");
                }
                value = args[++i];
            }
            values.put(name, value);
        }

        SampleOptions options = new SampleOptions();
        options.host = values.get("host");
        options.caFile = values.get("ca-file");
        options.chainFile = values.get("chain-file");
        options.keyFile = values.get("key-file");
        options.accessKeyId = values.get("access-key-id");
        options.accessKeySecret = values.get("access-key-secret");
        options.instanceId = values.get("instance-id");
        options.clientId = values.get("client-id");
        options.topic = values.get("topic");
        try {
            options.port = Integer.parseInt(values.get("port"));
            options.timeoutSeconds = Integer.parseInt(values.get("timeout"));
        } catch (NumberFormatException e) {
            usageError("--port and --timeout are numbers");
        }
        if (options.caFile == null) {
            usageError("--ca-file (or MQTT_CA_FILE) is required");
        }
        if (mutual && options.chainFile == null) {
            usageError("--chain-file (or MQTT_CHAIN_FILE) is required");
        }
        if (mutual && options.keyFile == null) {
            usageError("--key-file (or MQTT_KEY_FILE) is required");
        }
        int given = (options.accessKeyId != null ? 1 : 0) + (options.accessKeySecret != null ? 1 : 0)
                + (options.instanceId != null ? 1 : 0);
        if (given != 0 && given != 3) {
            usageError("--access-key-id, --access-key-secret and --instance-id go together");
        }
        return options;
    }

    public boolean hasCredentials() {
        return accessKeyId != null;
    }

    private static void usageError(String message) {
        System.err.println("error: " + message + " (--help lists the options)");
        System.exit(2);
    }

    private static void printHelp(String program, List<String[]> known) {
        System.out.println("usage: java -cp target/certmq-samples.jar " + program + " [options]");
        System.out.println();
        System.out.println("Connect to certmq over TLS, subscribe to a topic, publish one message to it"
                + " and wait for it to come back.");
        System.out.println();
        for (String[] option : known) {
            String shown = option[3] != null ? " (default: " + option[3] + ")" : "";
            System.out.println(String.format("  %-44s%s%s", "--" + option[0] + " " + option[1], option[2], shown));
        }
    }
}
