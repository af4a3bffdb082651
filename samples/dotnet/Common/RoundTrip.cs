using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Text;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Certmq.Samples;

/// <summary>A failure to report in one line, with what to do about it.</summary>
public sealed class SampleError : Exception
{
    public SampleError(string message) : base(message)
    {
    }
}

/// <summary>
/// What the two samples share: the Signature credentials of ApsaraMQ's conventions and one round
/// trip (connect, subscribe, publish, wait for the message to come back). OneWay and Mutual
/// differ only in the TLS options they hand to <see cref="RunAsync"/>.
/// </summary>
public static class RoundTrip
{
    public const string OneWay = "one-way TLS";
    public const string Mutual = "mutual TLS";

    static readonly Dictionary<MqttClientConnectResultCode, (int ReturnCode, string Text)> Refusals = new()
    {
        [MqttClientConnectResultCode.UnsupportedProtocolVersion] = (1, "unacceptable protocol version"),
        [MqttClientConnectResultCode.ClientIdentifierNotValid] = (2, "client identifier rejected"),
        [MqttClientConnectResultCode.ServerUnavailable] = (3, "server unavailable"),
        [MqttClientConnectResultCode.BadUserNameOrPassword] = (4, "bad user name or password"),
        [MqttClientConnectResultCode.NotAuthorized] = (5, "not authorized"),
    };

    /// <summary>ApsaraMQ's Signature mode: Base64(HMAC-SHA1(key=AccessKeySecret, msg=ClientId)).</summary>
    public static string SignaturePassword(string accessKeySecret, string clientId)
    {
        using var hmac = new HMACSHA1(Encoding.UTF8.GetBytes(accessKeySecret));
        return Convert.ToBase64String(hmac.ComputeHash(Encoding.UTF8.GetBytes(clientId)));
    }

    /// <summary>Runs the round trip; returns the exit status: 0 when the message came back, 1 after a one-line error.</summary>
    public static async Task<int> RunAsync(
        SampleOptions options, string mode, Action<MqttClientTlsOptionsBuilder, ServerCertificateCheck> configureTls)
    {
        try
        {
            await RoundTripAsync(options, mode, configureTls);
            return 0;
        }
        catch (SampleError error)
        {
            Console.Error.WriteLine($"error: {error.Message}");
            return 1;
        }
        catch (Exception error)
        {
            Console.Error.WriteLine($"error: {error.GetType().Name}: {error.Message}");
            return 1;
        }
    }

    static async Task RoundTripAsync(
        SampleOptions options, string mode, Action<MqttClientTlsOptionsBuilder, ServerCertificateCheck> configureTls)
    {
        var address = $"{options.Host}:{options.Port}";
        var payload = $"hello from the .NET sample ({mode})";
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(options.TimeoutSeconds));

        var factory = new MqttClientFactory();
        var builder = factory.CreateClientOptionsBuilder()
            .WithTcpServer(options.Host, options.Port)
            .WithClientId(options.ClientId)
            .WithProtocolVersion(MqttProtocolVersion.V311)
            .WithCleanSession()
            .WithKeepAlivePeriod(TimeSpan.FromSeconds(30))
            .WithTimeout(TimeSpan.FromSeconds(options.TimeoutSeconds));
        if (options.HasCredentials)
        {
            builder.WithCredentials(
                $"Signature|{options.AccessKeyId}|{options.InstanceId}",
                SignaturePassword(options.AccessKeySecret!, options.ClientId));
        }

        ServerCertificateCheck server;
        try
        {
            server = new ServerCertificateCheck(options.CaFile);
            builder.WithTlsOptions(tls =>
            {
                tls.UseTls().WithSslProtocols(SslProtocols.Tls12 | SslProtocols.Tls13);
                configureTls(tls, server);
            });
        }
        catch (Exception error) when (error is IOException or CryptographicException or UnauthorizedAccessException)
        {
            throw new SampleError($"cannot load the TLS files: {error.Message}");
        }

        using var client = factory.CreateMqttClient();
        var received = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var lost = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        client.ApplicationMessageReceivedAsync += args =>
        {
            var text = args.ApplicationMessage.ConvertPayloadToString() ?? "";
            Console.WriteLine($"received on {args.ApplicationMessage.Topic}: {text}");
            if (text == payload)
            {
                received.TrySetResult();
            }

            return Task.CompletedTask;
        };
        client.DisconnectedAsync += args =>
        {
            if (args.ClientWasConnected)
            {
                lost.TrySetResult(args.Exception?.Message ?? args.Reason.ToString());
            }

            return Task.CompletedTask;
        };

        MqttClientConnectResult result;
        try
        {
            result = await client.ConnectAsync(builder.Build(), deadline.Token);
        }
        catch (Exception error) when (error is OperationCanceledException || deadline.IsCancellationRequested)
        {
            throw new SampleError($"timed out after {options.TimeoutSeconds} s waiting for the broker to accept the connection");
        }
        catch (Exception error)
        {
            throw ConnectFailure(error, server, address, mode);
        }

        if (result.ResultCode != MqttClientConnectResultCode.Success)
        {
            throw Refusal(result.ResultCode);
        }

        Console.WriteLine($"connected to {address} as {options.ClientId} ({mode})");
        try
        {
            var subscription = factory.CreateSubscribeOptionsBuilder()
                .WithTopicFilter(filter => filter.WithTopic(options.Topic).WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce))
                .Build();
            var granted = await client.SubscribeAsync(subscription, deadline.Token);
            if (granted.Items.Any(item => (int)item.ResultCode >= 0x80))
            {
                throw new SampleError($"the broker refused the subscription to {options.Topic}");
            }

            Console.WriteLine($"subscribed to {options.Topic}");

            var message = factory.CreateApplicationMessageBuilder()
                .WithTopic(options.Topic)
                .WithPayload(payload)
                .WithQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce)
                .Build();
            await client.PublishAsync(message, deadline.Token);
            Console.WriteLine($"published to {options.Topic}: {payload}");

            var first = await Task.WhenAny(received.Task, lost.Task, Task.Delay(System.Threading.Timeout.Infinite, deadline.Token));
            if (first == lost.Task)
            {
                throw new SampleError($"the broker closed the connection: {lost.Task.Result}");
            }

            if (first != received.Task)
            {
                throw new SampleError($"timed out after {options.TimeoutSeconds} s waiting for the message to come back");
            }
        }
        catch (Exception error) when (error is not SampleError)
        {
            throw new SampleError(deadline.IsCancellationRequested
                ? $"timed out after {options.TimeoutSeconds} s waiting for the broker"
                : $"the broker closed the connection: {error.Message}");
        }
        finally
        {
            if (client.IsConnected)
            {
                try
                {
                    await client.DisconnectAsync(factory.CreateClientDisconnectOptionsBuilder().Build());
                }
                catch (Exception)
                {
                    // Nothing more to report: the outcome is already known.
                }
            }
        }
    }

    static SampleError Refusal(MqttClientConnectResultCode code)
    {
        if (!Refusals.TryGetValue(code, out var refusal))
        {
            return new SampleError($"the broker refused the connection: {code}");
        }

        var hint = refusal.ReturnCode switch
        {
            4 => ": check the AccessKey pair and the instance id",
            5 => ": `certmq decisions --limit 5` on the broker says why",
            _ => "",
        };
        return new SampleError(
            $"the broker refused the connection: {refusal.Text} (CONNACK return code {refusal.ReturnCode}){hint}");
    }

    static SampleError ConnectFailure(Exception error, ServerCertificateCheck server, string address, string mode)
    {
        var causes = new List<Exception>();
        for (var cause = error; cause is not null; cause = cause.InnerException)
        {
            causes.Add(cause);
        }

        var socket = causes.OfType<SocketException>().FirstOrDefault();
        if (socket?.SocketErrorCode == SocketError.ConnectionRefused)
        {
            return new SampleError($"cannot connect to {address}: connection refused (is certmq running?)");
        }

        if (socket?.SocketErrorCode is SocketError.HostNotFound or SocketError.NoData)
        {
            return new SampleError($"cannot connect to {address}: unknown host name");
        }

        if (server.NameMismatch)
        {
            return new SampleError(
                $"TLS handshake with {address} failed: {server.Failure} (connect with a --host the broker's certificate names, e.g. localhost)");
        }

        if (server.Failure is not null)
        {
            return new SampleError(
                $"TLS handshake with {address} failed: {server.Failure} (is --ca-file the CA that signed the broker's certificate, data/server-ca/ca.pem?)");
        }

        if (causes.OfType<AuthenticationException>().FirstOrDefault() is { } tls)
        {
            var hint = mode == Mutual
                ? " (the broker did not accept the device certificate: is its CA registered? `certmq decisions --limit 5` on the broker says why)"
                : "";
            return new SampleError($"TLS handshake with {address} failed: {tls.Message}{hint}");
        }

        return new SampleError(mode == Mutual
            ? "the broker closed the connection before accepting it: it did not accept the device certificate (is its CA registered?); `certmq decisions --limit 5` on the broker says why"
            : "the broker closed the connection before accepting it: if it is in mutual mode, it wants a device certificate (use Mutual)");
    }
}
