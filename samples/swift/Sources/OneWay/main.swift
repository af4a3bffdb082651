// One-way TLS: the client verifies certmq's server certificate with the CA file, and
// authenticates with Signature credentials (an AccessKey pair and the instance id).
//
//   swift run --package-path samples/swift OneWay --ca-file data/server-ca/ca.pem \
//     --access-key-id LTAI... --access-key-secret ... --instance-id mqtt-local-...

import CertmqSample

let options = SampleOptions.parse(program: "OneWay", mutual: false)

runSample(options, mode: .oneWay) { options in
    // Trust only the CA that signed the broker's certificate (see TLSFiles.evaluate).
    TLSSetup(serverCA: try TLSFiles.certificate(pemFile: options.caFile), deviceIdentity: nil)
}
