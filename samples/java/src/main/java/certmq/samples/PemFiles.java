package certmq.samples;

import java.io.FileInputStream;
import java.io.FileReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.Reader;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.util.Collection;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocketFactory;
import javax.net.ssl.TrustManagerFactory;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;
import org.bouncycastle.openssl.PEMKeyPair;
import org.bouncycastle.openssl.PEMParser;
import org.bouncycastle.openssl.jcajce.JcaPEMKeyConverter;

/** TLS socket factories made from the PEM files that certmq and openssl write. */
public final class PemFiles {
    private static final char[] IN_MEMORY_PASSWORD = "in-memory".toCharArray();

    private PemFiles() {}

    /** One-way TLS: trust only the CA that signed the broker's certificate. */
    public static SSLSocketFactory oneWay(String caFile) throws IOException, GeneralSecurityException {
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(null, trustOnly(caFile).getTrustManagers(), null);
        return context.getSocketFactory();
    }

    /**
     * Mutual TLS: trust only the CA that signed the broker's certificate, and present the device
     * certificate chain (device certificate + CA certificate) with its private key.
     */
    public static SSLSocketFactory mutual(String caFile, String chainFile, String keyFile)
            throws IOException, GeneralSecurityException {
        Certificate[] chain = readCertificates(chainFile).toArray(new Certificate[0]);
        if (chain.length == 0) {
            throw new GeneralSecurityException(chainFile + " holds no certificate");
        }
        KeyStore deviceStore = KeyStore.getInstance("PKCS12");
        deviceStore.load(null, null);
        deviceStore.setKeyEntry("device", readPrivateKey(keyFile), IN_MEMORY_PASSWORD, chain);
        KeyManagerFactory keys = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        keys.init(deviceStore, IN_MEMORY_PASSWORD);

        SSLContext context = SSLContext.getInstance("TLS");
        context.init(keys.getKeyManagers(), trustOnly(caFile).getTrustManagers(), null);
        return context.getSocketFactory();
    }

    private static TrustManagerFactory trustOnly(String caFile) throws IOException, GeneralSecurityException {
        KeyStore trustStore = KeyStore.getInstance("PKCS12");
        trustStore.load(null, null);
        int index = 0;
        for (Certificate certificate : readCertificates(caFile)) {
            trustStore.setCertificateEntry("ca-" + index++, certificate);
        }
        if (index == 0) {
            throw new GeneralSecurityException(caFile + " holds no certificate");
        }
        TrustManagerFactory trust = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        trust.init(trustStore);
        return trust;
    }

    private static Collection<? extends Certificate> readCertificates(String file)
            throws IOException, GeneralSecurityException {
        try (InputStream input = new FileInputStream(file)) {
            return CertificateFactory.getInstance("X.509").generateCertificates(input);
        }
    }

    /** A PEM private key: PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY"). */
    private static PrivateKey readPrivateKey(String file) throws IOException, GeneralSecurityException {
        try (Reader reader = new FileReader(file); PEMParser parser = new PEMParser(reader)) {
            Object object = parser.readObject();
            JcaPEMKeyConverter converter = new JcaPEMKeyConverter();
            if (object instanceof PEMKeyPair) {
                return converter.getKeyPair((PEMKeyPair) object).getPrivate();
            }
            if (object instanceof PrivateKeyInfo) {
                return converter.getPrivateKey((PrivateKeyInfo) object);
            }
            throw new GeneralSecurityException(
                    file + " holds no unencrypted PEM private key"
                            + (object == null ? "" : " (found " + object.getClass().getSimpleName() + ")"));
        }
    }
}
