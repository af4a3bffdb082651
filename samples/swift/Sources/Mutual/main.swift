// Mutual TLS: the client verifies certmq's server certificate with the CA file, and presents
// its device certificate and key, from a PKCS#12 bundle (what Apple's Security framework
// imports). Signature credentials are optional in mutual mode; when given, they must be valid.
//
//   certmq pki p12 --cert device-0001/chain.pem --key device-0001/device.key \
//     --password "$MQTT_P12_PASSWORD" --out device-0001.p12
//   swift run --package-path samples/swift Mutual --ca-file data/server-ca/ca.pem \
//     --p12-file device-0001.p12

import CertmqSample

let options = SampleOptions.parse(program: "Mutual", mutual: true)

runSample(options, mode: .mutual) { options in
    TLSSetup(
        // Trust only the CA that signed the broker's certificate (see TLSFiles.evaluate).
        serverCA: try TLSFiles.certificate(pemFile: options.caFile),
        // What the device presents: the identity (certificate and key) of the PKCS#12 bundle.
        deviceIdentity: try TLSFiles.identity(p12File: options.p12File ?? "", password: options.p12Password ?? "")
    )
}
