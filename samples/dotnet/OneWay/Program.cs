// One-way TLS: the client verifies certmq's server certificate with the CA file, and
// authenticates with Signature credentials (an AccessKey pair and the instance id).
//
//   dotnet run --project samples/dotnet/OneWay -- --ca-file data/server-ca/ca.pem \
//     --access-key-id LTAI... --access-key-secret ... --instance-id mqtt-local-...

using Certmq.Samples;

var options = SampleOptions.Parse("OneWay", args, mutual: false);

return await RoundTrip.RunAsync(options, RoundTrip.OneWay, (tls, server) =>
    // Trust only the CA that signed the broker's certificate (the check builds the chain to it),
    // and refuse a certificate that does not name the host.
    tls.WithCertificateValidationHandler(server.Validate));
