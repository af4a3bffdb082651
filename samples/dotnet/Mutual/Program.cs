// Mutual TLS: the client verifies certmq's server certificate with the CA file, and presents
// its device certificate and key. Signature credentials are optional in mutual mode; when
// given, they must be valid.
//
//   dotnet run --project samples/dotnet/Mutual -- --ca-file data/server-ca/ca.pem \
//     --chain-file device-0001/chain.pem --key-file device-0001/device.key

using Certmq.Samples;

var options = SampleOptions.Parse("Mutual", args, mutual: true);

return await RoundTrip.RunAsync(options, RoundTrip.Mutual, (tls, server) =>
    // Trust only the CA that signed the broker's certificate (the check builds the chain to it),
    // and refuse a certificate that does not name the host.
    tls.WithCertificateValidationHandler(server.Validate)
        // What the device presents: its certificate (the first of the chain file) with its key.
        .WithClientCertificates(new[] { DeviceCertificate.Load(options.ChainFile!, options.KeyFile!) }));
