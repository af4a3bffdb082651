package certmq.samples;

import java.io.EOFException;
import java.io.IOException;
import java.net.ConnectException;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.InvalidKeyException;
import java.security.NoSuchAlgorithmException;
import java.security.cert.CertPathBuilderException;
import java.security.cert.CertPathValidatorException;
import java.security.cert.CertificateException;
import java.util.Base64;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLSocketFactory;
import org.eclipse.paho.client.mqttv3.IMqttDeliveryToken;
import org.eclipse.paho.client.mqttv3.MqttCallback;
import org.eclipse.paho.client.mqttv3.MqttClient;
import org.eclipse.paho.client.mqttv3.MqttConnectOptions;
import org.eclipse.paho.client.mqttv3.MqttException;
import org.eclipse.paho.client.mqttv3.MqttMessage;
import org.eclipse.paho.client.mqttv3.persist.MemoryPersistence;

/**
 * What the two samples share: the Signature credentials of ApsaraMQ's conventions and one round
 * trip (connect, subscribe, publish, wait for the message to come back). OneWay and Mutual differ
 * only in the socket factory they hand to {@link #run}.
 */
public final class RoundTrip {
    public static final String ONE_WAY = "one-way TLS";
    public static final String MUTUAL = "mutual TLS";
    // A one-way client refused by a broker in mutual mode.
    private static final String WANTS_CERTIFICATE = "the broker closed the connection before accepting it:"
            + " if it is in mutual mode, it wants a device certificate (use certmq.samples.Mutual)";

    private static final String[] CONNACK_REFUSALS = {
        "accepted",
        "unacceptable protocol version",
        "client identifier rejected",
        "server unavailable",
        "bad user name or password",
        "not authorized",
    };

    /** Makes the TLS socket factory; may fail on unreadable or malformed files. */
    public interface TlsFactory {
        SSLSocketFactory create() throws IOException, GeneralSecurityException;
    }

    /** A failure to report in one line, with what to do about it. */
    static final class SampleError extends Exception {
        SampleError(String message) {
            super(message);
        }
    }

    private RoundTrip() {}

    /** Runs the round trip and exits: 0 when the message came back, 1 with a one-line error otherwise. */
    public static void run(SampleOptions options, TlsFactory tls, String mode) {
        try {
            roundTrip(options, tls, mode);
        } catch (SampleError error) {
            System.err.println("error: " + error.getMessage());
            System.exit(1);
        }
        System.exit(0);
    }

    /** ApsaraMQ's Signature mode: Base64(HMAC-SHA1(key=AccessKeySecret, msg=ClientId)). */
    public static String signaturePassword(String accessKeySecret, String clientId) {
        try {
            Mac mac = Mac.getInstance("HmacSHA1");
            mac.init(new SecretKeySpec(accessKeySecret.getBytes(StandardCharsets.UTF_8), "HmacSHA1"));
            return Base64.getEncoder().encodeToString(mac.doFinal(clientId.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException | InvalidKeyException e) {
            throw new IllegalStateException("HMAC-SHA1 is not available", e);
        }
    }

    private static void roundTrip(SampleOptions options, TlsFactory tls, String mode) throws SampleError {
        SSLSocketFactory socketFactory;
        try {
            socketFactory = tls.create();
        } catch (IOException | GeneralSecurityException e) {
            throw new SampleError("cannot load the TLS files: " + e);
        }
        String address = options.host + ":" + options.port;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(options.timeoutSeconds);
        String payload = "hello from the Java sample (" + mode + ")";

        MqttConnectOptions connectOptions = new MqttConnectOptions();
        connectOptions.setMqttVersion(MqttConnectOptions.MQTT_VERSION_3_1_1);
        connectOptions.setCleanSession(true);
        connectOptions.setKeepAliveInterval(30);
        connectOptions.setConnectionTimeout(options.timeoutSeconds);
        connectOptions.setAutomaticReconnect(false);
        connectOptions.setSocketFactory(socketFactory);
        connectOptions.setHttpsHostnameVerificationEnabled(true); // the broker's certificate must name the host
        if (options.hasCredentials()) {
            connectOptions.setUserName("Signature|" + options.accessKeyId + "|" + options.instanceId);
            connectOptions.setPassword(signaturePassword(options.accessKeySecret, options.clientId).toCharArray());
        }

        BlockingQueue<Object> arrivals = new LinkedBlockingQueue<>();
        MqttClient client;
        try {
            client = new MqttClient("ssl://" + address, options.clientId, new MemoryPersistence());
        } catch (MqttException e) {
            throw new SampleError("cannot create the client for ssl://" + address + ": " + e.getMessage());
        }
        client.setCallback(new MqttCallback() {
            @Override
            public void messageArrived(String topic, MqttMessage message) {
                arrivals.add(new String[] {topic, new String(message.getPayload(), StandardCharsets.UTF_8)});
            }

            @Override
            public void connectionLost(Throwable cause) {
                arrivals.add(cause == null ? new EOFException() : cause);
            }

            @Override
            public void deliveryComplete(IMqttDeliveryToken token) {}
        });

        try {
            try {
                client.connect(connectOptions);
            } catch (MqttException e) {
                throw connectFailure(e, address, mode, options.timeoutSeconds);
            }
            System.out.println("connected to " + address + " as " + options.clientId + " (" + mode + ")");
            try {
                client.subscribe(options.topic, 1);
            } catch (MqttException e) {
                throw new SampleError("the broker refused the subscription to " + options.topic + ": " + e.getMessage());
            }
            System.out.println("subscribed to " + options.topic);
            try {
                client.publish(options.topic, payload.getBytes(StandardCharsets.UTF_8), 1, false);
            } catch (MqttException e) {
                throw new SampleError("publishing failed: " + e.getMessage());
            }
            System.out.println("published to " + options.topic + ": " + payload);

            while (true) {
                long left = deadline - System.nanoTime();
                Object arrival = left > 0 ? arrivals.poll(left, TimeUnit.NANOSECONDS) : null;
                if (arrival == null) {
                    throw new SampleError(
                            "timed out after " + options.timeoutSeconds + " s waiting for the message to come back");
                }
                if (arrival instanceof Throwable) {
                    throw new SampleError("the broker closed the connection: " + arrival);
                }
                String[] message = (String[]) arrival;
                System.out.println("received on " + message[0] + ": " + message[1]);
                if (message[1].equals(payload)) {
                    break;
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new SampleError("interrupted");
        } finally {
            try {
                if (client.isConnected()) {
                    client.disconnect(1000);
                }
                client.close();
            } catch (MqttException ignored) {
                // Nothing more to report: the outcome is already known.
            }
        }
    }

    private static SampleError connectFailure(MqttException error, String address, String mode, int timeout) {
        int code = error.getReasonCode();
        if (code >= 1 && code <= 5) {
            String hint = code == 4
                    ? ": check the AccessKey pair and the instance id"
                    : code == 5 ? ": `certmq decisions --limit 5` on the broker says why" : "";
            return new SampleError("the broker refused the connection: " + CONNACK_REFUSALS[code]
                    + " (CONNACK return code " + code + ")" + hint);
        }
        Throwable cause = rootCause(error);
        if (cause instanceof ConnectException) {
            return new SampleError("cannot connect to " + address + ": connection refused (is certmq running?)");
        }
        if (cause instanceof UnknownHostException) {
            return new SampleError("cannot connect to " + address + ": unknown host name");
        }
        if (code == MqttException.REASON_CODE_CLIENT_TIMEOUT || cause instanceof SocketTimeoutException) {
            return new SampleError("timed out after " + timeout + " s waiting for the broker to accept the connection");
        }
        if (!mode.equals(MUTUAL) && String.valueOf(cause.getMessage()).contains("certificate_required")) {
            // The broker's alert: it is in mutual mode and this client has no certificate to show.
            return new SampleError(WANTS_CERTIFICATE);
        }
        if (causeOfType(error, SSLException.class) != null) {
            String message = cause.getMessage() == null ? cause.toString() : cause.getMessage();
            boolean serverCertificate = cause instanceof CertificateException
                    || cause instanceof CertPathBuilderException
                    || cause instanceof CertPathValidatorException;
            String hint;
            if (serverCertificate && message.contains("match")) {
                hint = " (connect with a --host the broker's certificate names, e.g. localhost)";
            } else if (serverCertificate) {
                hint = " (is --ca-file the CA that signed the broker's certificate, data/server-ca/ca.pem?)";
            } else if (mode.equals(MUTUAL)) {
                hint = " (the broker did not accept the device certificate: is its CA registered?"
                        + " `certmq decisions --limit 5` on the broker says why)";
            } else {
                hint = "";
            }
            return new SampleError("TLS handshake with " + address + " failed: " + message + hint);
        }
        if (code == MqttException.REASON_CODE_CONNECTION_LOST
                || cause instanceof EOFException
                || cause instanceof SocketException) {
            return new SampleError(mode.equals(MUTUAL)
                    ? "the broker closed the connection before accepting it: it did not accept the device certificate"
                            + " (is its CA registered?); `certmq decisions --limit 5` on the broker says why"
                    : WANTS_CERTIFICATE);
        }
        return new SampleError("cannot connect to " + address + ": " + error.getMessage()
                + (cause != error ? " (" + cause + ")" : ""));
    }

    private static <T extends Throwable> T causeOfType(Throwable error, Class<T> type) {
        for (Throwable cause = error; cause != null; cause = cause.getCause() == cause ? null : cause.getCause()) {
            if (type.isInstance(cause)) {
                return type.cast(cause);
            }
        }
        return null;
    }

    private static Throwable rootCause(Throwable error) {
        Throwable cause = error;
        while (cause.getCause() != null && cause.getCause() != cause) {
            cause = cause.getCause();
        }
        return cause;
    }
}
