using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using MQTTnet;

namespace Certmq.Samples;

/// <summary>
/// Checks the broker's certificate against the CA file alone, not the machine's trust store:
/// the chain must end at that CA and the certificate must name the host connected to.
/// </summary>
public sealed class ServerCertificateCheck
{
    readonly X509Certificate2Collection _trusted = new();

    public ServerCertificateCheck(string caFile)
    {
        _trusted.ImportFromPemFile(caFile);
        if (_trusted.Count == 0)
        {
            throw new CryptographicException($"{caFile} holds no PEM certificate");
        }
    }

    /// <summary>Why the last check failed: null when it did not.</summary>
    public string? Failure { get; private set; }

    public bool NameMismatch { get; private set; }

    public bool Validate(MqttClientCertificateValidationEventArgs args)
    {
        if (args.Certificate is null)
        {
            Failure = "the broker sent no certificate";
            return false;
        }

        // SslStream compares the certificate's names with the host; that part of its verdict holds.
        if (args.SslPolicyErrors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch))
        {
            NameMismatch = true;
            Failure = "the broker's certificate does not name the host";
            return false;
        }

        // Its chain verdict used the machine's trust store: build the chain again to the CA file only.
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(_trusted);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (args.Chain is not null)
        {
            foreach (var element in args.Chain.ChainElements)
            {
                chain.ChainPolicy.ExtraStore.Add(element.Certificate);
            }
        }

        using var server = new X509Certificate2(args.Certificate);
        if (chain.Build(server))
        {
            return true;
        }

        Failure = string.Join("; ", chain.ChainStatus.Select(status => status.StatusInformation.Trim()).Distinct());
        return false;
    }
}

public static class DeviceCertificate
{
    /// <summary>The device certificate (the first of the chain file) with its PEM private key.</summary>
    public static X509Certificate2 Load(string chainFile, string keyFile)
    {
        using var fromPem = X509Certificate2.CreateFromPemFile(chainFile, keyFile);
        // On Windows, SslStream cannot use a key that lives only in memory; a PKCS#12 round trip
        // gives it one it can use. Elsewhere it changes nothing.
        return new X509Certificate2(fromPem.Export(X509ContentType.Pkcs12));
    }
}
