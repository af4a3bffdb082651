import Foundation

/// The options of both samples. Every option is a flag or an environment variable (the flag
/// wins), as in every certmq sample. An iOS app, which has neither, sets the fields in code.
public struct SampleOptions {
    public var host = "localhost"
    public var port: UInt16 = 8883
    public var caFile = ""
    public var p12File: String?  // mutual only
    public var p12Password: String?  // mutual only
    public var accessKeyID: String?
    public var accessKeySecret: String?
    public var instanceID: String?
    public var clientID = "GID_demo@@@device-0001"
    public var topic = "demo/hello"
    public var timeout: TimeInterval = 10

    public init() {}

    public var hasCredentials: Bool { accessKeyID != nil }

    // flag, environment variable, help, default, whether only the mutual sample has it
    private static let known: [(name: String, variable: String, help: String, fallback: String?, mutualOnly: Bool)] = [
        ("host", "MQTT_HOST", "broker host name, as written in its certificate", "localhost", false),
        ("port", "MQTT_PORT", "MQTT over TLS port", "8883", false),
        ("ca-file", "MQTT_CA_FILE", "CA certificate that signed the broker's certificate (PEM)", nil, false),
        ("p12-file", "MQTT_P12_FILE", "PKCS#12 bundle of the device certificate, its CA and its key", nil, true),
        ("p12-password", "MQTT_P12_PASSWORD", "the bundle's password", nil, true),
        ("access-key-id", "MQTT_ACCESS_KEY_ID", "AccessKeyId for Signature credentials", nil, false),
        ("access-key-secret", "MQTT_ACCESS_KEY_SECRET", "AccessKeySecret for Signature credentials", nil, false),
        ("instance-id", "MQTT_INSTANCE_ID", "instance id for Signature credentials", nil, false),
        ("client-id", "MQTT_CLIENT_ID", "MQTT client id, GroupID@@@DeviceID", "GID_demo@@@device-0001", false),
        ("topic", "MQTT_TOPIC", "topic to subscribe and publish to", "demo/hello", false),
        ("timeout", "MQTT_TIMEOUT", "seconds to wait for the whole round trip", "10", false),
    ]

    /// Exits with status 2 and a one-line message when an option is missing or wrong, 0 after --help.
    public static func parse(
        program: String, arguments: [String] = Array(CommandLine.arguments.dropFirst()), mutual: Bool
    ) -> SampleOptions {
        let options = known.filter { mutual || !$0.mutualOnly }
        var values: [String: String] = [:]
        for option in options {
            if let fromEnvironment = ProcessInfo.processInfo.environment[option.variable], !fromEnvironment.isEmpty {
                values[option.name] = fromEnvironment
            } else if let fallback = option.fallback {
                values[option.name] = fallback
            }
        }

        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--help" || argument == "-h" {
                print("usage: swift run --package-path samples/swift \(program) [options]\n")
                print("Connect to certmq over TLS, subscribe to a topic, publish one message to it and wait for it to come back.\n")
                for option in options {
                    let flag = "--\(option.name) \(option.variable)"
                    let padding = String(repeating: " ", count: max(1, 44 - flag.count))
                    print("  \(flag)\(padding)\(option.help)\(option.fallback.map { " (default: \($0))" } ?? "")")
                }
                exit(0)
            }
            guard argument.hasPrefix("--") else { usageError("unexpected argument \(argument)") }
            var name = String(argument.dropFirst(2))
            var value: String?
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            guard options.contains(where: { $0.name == name }) else { usageError("unknown option \(argument)") }
            if value == nil {
                guard index + 1 < arguments.count else { usageError("\(argument) needs a value") }
                index += 1
                value = arguments[index]
            }
            values[name] = value
            index += 1
        }

        var parsed = SampleOptions()
        guard let port = UInt16(values["port"] ?? ""), let timeout = Int(values["timeout"] ?? ""), timeout > 0 else {
            usageError("--port and --timeout are numbers")
        }
        parsed.host = values["host"] ?? parsed.host
        parsed.port = port
        parsed.timeout = TimeInterval(timeout)
        parsed.caFile = values["ca-file"] ?? ""
        parsed.p12File = values["p12-file"]
        parsed.p12Password = values["p12-password"]
        parsed.accessKeyID = values["access-key-id"]
        parsed.accessKeySecret = values["access-key-secret"]
        parsed.instanceID = values["instance-id"]
        parsed.clientID = values["client-id"] ?? parsed.clientID
        parsed.topic = values["topic"] ?? parsed.topic

        if parsed.caFile.isEmpty { usageError("--ca-file (or MQTT_CA_FILE) is required") }
        if mutual && parsed.p12File == nil { usageError("--p12-file (or MQTT_P12_FILE) is required") }
        let given = [parsed.accessKeyID, parsed.accessKeySecret, parsed.instanceID].compactMap { $0 }.count
        if given != 0 && given != 3 {
            usageError("--access-key-id, --access-key-secret and --instance-id go together")
        }
        return parsed
    }
}

func usageError(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message) (--help lists the options)\n".utf8))
    exit(2)
}
