namespace Certmq.Samples;

/// <summary>
/// The options of both samples. Every option is a flag or an environment variable (the flag
/// wins), as in every certmq sample.
/// </summary>
public sealed class SampleOptions
{
    // flag, environment variable, help, default, whether only the mutual sample has it
    static readonly (string Name, string Variable, string Help, string? Default, bool MutualOnly)[] Known =
    {
        ("host", "MQTT_HOST", "broker host name, as written in its certificate", "localhost", false),
        ("port", "MQTT_PORT", "MQTT over TLS port", "8883", false),
        ("ca-file", "MQTT_CA_FILE", "CA certificate that signed the broker's certificate (PEM)", null, false),
        ("chain-file", "MQTT_CHAIN_FILE", "device certificate followed by its CA certificate (PEM)", null, true),
        ("key-file", "MQTT_KEY_FILE", "the device certificate's private key (PEM)", null, true),
        ("access-key-id", "MQTT_ACCESS_KEY_ID", "AccessKeyId for Signature credentials", null, false),
        ("access-key-secret", "MQTT_ACCESS_KEY_SECRET", "AccessKeySecret for Signature credentials", null, false),
        ("instance-id", "MQTT_INSTANCE_ID", "instance id for Signature credentials", null, false),
        ("client-id", "MQTT_CLIENT_ID", "MQTT client id, GroupID@@@DeviceID", "GID_demo@@@device-0001", false),
        ("topic", "MQTT_TOPIC", "topic to subscribe and publish to", "demo/hello", false),
        ("timeout", "MQTT_TIMEOUT", "seconds to wait for the whole round trip", "10", false),
    };

    public string Host { get; private init; } = "localhost";
    public int Port { get; private init; }
    public string CaFile { get; private init; } = "";
    public string? ChainFile { get; private init; }
    public string? KeyFile { get; private init; }
    public string? AccessKeyId { get; private init; }
    public string? AccessKeySecret { get; private init; }
    public string? InstanceId { get; private init; }
    public string ClientId { get; private init; } = "";
    public string Topic { get; private init; } = "";
    public int TimeoutSeconds { get; private init; }

    public bool HasCredentials => AccessKeyId is not null;

    /// <summary>Exits with status 2 and a one-line message when an option is missing or wrong, 0 after --help.</summary>
    public static SampleOptions Parse(string program, string[] args, bool mutual)
    {
        var known = Known.Where(option => mutual || !option.MutualOnly).ToList();
        var values = new Dictionary<string, string?>();
        foreach (var option in known)
        {
            var fromEnvironment = Environment.GetEnvironmentVariable(option.Variable);
            values[option.Name] = string.IsNullOrEmpty(fromEnvironment) ? option.Default : fromEnvironment;
        }

        for (var i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            if (arg is "--help" or "-h")
            {
                PrintHelp(program, known);
                Environment.Exit(0);
            }

            var name = arg.StartsWith("--", StringComparison.Ordinal) ? arg[2..] : "";
            string? value = null;
            var equals = name.IndexOf('=');
            if (equals >= 0)
            {
                value = name[(equals + 1)..];
                name = name[..equals];
            }

            if (!values.ContainsKey(name))
            {
                UsageError($"unknown option {arg}");
            }

            if (value is null)
            {
                if (i + 1 >= args.Length)
                {
                    UsageError($"{arg} needs a value");
                }

                value = args[++i];
            }

            values[name] = value;
        }

        var portIsNumber = int.TryParse(values["port"], out var port);
        var timeoutIsNumber = int.TryParse(values["timeout"], out var timeout);
        if (!portIsNumber || !timeoutIsNumber || timeout <= 0)
        {
            UsageError("--port and --timeout are numbers");
        }

        var options = new SampleOptions
        {
            Host = values["host"]!,
            Port = port,
            CaFile = values["ca-file"] ?? "",
            ChainFile = values.GetValueOrDefault("chain-file"),
            KeyFile = values.GetValueOrDefault("key-file"),
            AccessKeyId = values["access-key-id"],
            AccessKeySecret = values["access-key-secret"],
            InstanceId = values["instance-id"],
            ClientId = values["client-id"]!,
            Topic = values["topic"]!,
            TimeoutSeconds = timeout,
        };
        if (options.CaFile.Length == 0)
        {
            UsageError("--ca-file (or MQTT_CA_FILE) is required");
        }

        if (mutual && options.ChainFile is null)
        {
            UsageError("--chain-file (or MQTT_CHAIN_FILE) is required");
        }

        if (mutual && options.KeyFile is null)
        {
            UsageError("--key-file (or MQTT_KEY_FILE) is required");
        }

        var given = new[] { options.AccessKeyId, options.AccessKeySecret, options.InstanceId }.Count(value => value is not null);
        if (given != 0 && given != 3)
        {
            UsageError("--access-key-id, --access-key-secret and --instance-id go together");
        }

        return options;
    }

    static void UsageError(string message)
    {
        Console.Error.WriteLine($"error: {message} (--help lists the options)");
        Environment.Exit(2);
    }

    static void PrintHelp(string program, IEnumerable<(string Name, string Variable, string Help, string? Default, bool MutualOnly)> known)
    {
        Console.WriteLine($"usage: dotnet run --project samples/dotnet/{program} -- [options]");
        Console.WriteLine();
        Console.WriteLine("Connect to certmq over TLS, subscribe to a topic, publish one message to it and wait for it to come back.");
        Console.WriteLine();
        foreach (var option in known)
        {
            var shown = option.Default is null ? "" : $" (default: {option.Default})";
            Console.WriteLine($"  {$"--{option.Name} {option.Variable}",-44}{option.Help}{shown}");
        }
    }
}
