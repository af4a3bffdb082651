import CocoaMQTT
import CryptoKit
import Foundation

/// The two modes, as the programs print them.
public enum Mode: String {
    case oneWay = "one-way TLS"
    case mutual = "mutual TLS"
}

/// A failure to report in one line, with what to do about it.
public struct SampleError: Error, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// ApsaraMQ's Signature mode: Base64(HMAC-SHA1(key=AccessKeySecret, msg=ClientId)).
public func signaturePassword(accessKeySecret: String, clientID: String) -> String {
    let code = HMAC<Insecure.SHA1>.authenticationCode(
        for: Data(clientID.utf8), using: SymmetricKey(data: Data(accessKeySecret.utf8)))
    return Data(code).base64EncodedString()
}

/// Runs the round trip and exits: 0 when the message came back, 1 with a one-line error otherwise.
public func runSample(_ options: SampleOptions, mode: Mode, tls: (SampleOptions) throws -> TLSSetup) -> Never {
    do {
        try roundTrip(options, mode: mode, tls: tls)
        exit(0)
    } catch {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        exit(1)
    }
}

/// Connect, subscribe, publish, and wait for the message to come back. An app calls this off
/// the main thread: it blocks until the round trip is over or the timeout has passed.
public func roundTrip(_ options: SampleOptions, mode: Mode, tls makeTLS: (SampleOptions) throws -> TLSSetup) throws {
    let setup: TLSSetup
    do {
        setup = try makeTLS(options)
    } catch {
        throw SampleError("cannot load the TLS files: \(error is SampleError ? "\(error)" : error.localizedDescription)")
    }
    let address = "\(options.host):\(options.port)"
    let payload = "hello from the Swift sample (\(mode.rawValue))"
    let seconds = Int(options.timeout)

    // Every callback runs on this queue, and so does every access to the state below.
    let queue = DispatchQueue(label: "certmq.sample")
    let finished = DispatchSemaphore(value: 0)
    var outcome: Result<Void, SampleError>?
    var connected = false
    var trustFailure: TrustFailure?
    func finish(_ result: Result<Void, SampleError>) {
        guard outcome == nil else { return }
        outcome = result
        finished.signal()
    }

    let mqtt = CocoaMQTT(clientID: options.clientID, host: options.host, port: options.port)
    mqtt.delegateQueue = queue
    mqtt.logLevel = .off
    mqtt.keepAlive = 30  // MQTT 3.1.1, as CocoaMQTT speaks it; CocoaMQTT5 is its MQTT 5 client
    mqtt.cleanSession = true
    mqtt.autoReconnect = false  // report a failure instead of retrying
    mqtt.enableSSL = true
    // The name says "allow", but what it does is hand the check of the broker's certificate to
    // didReceiveTrust below, which trusts only the CA file and checks the host name.
    mqtt.allowUntrustCACertificate = true
    var settings: [String: NSObject] = [kCFStreamSSLPeerName as String: options.host as NSString]
    if let identity = setup.deviceIdentity {
        settings[kCFStreamSSLCertificates as String] = [identity] as CFArray
    }
    mqtt.sslSettings = settings
    if options.hasCredentials, let id = options.accessKeyID, let secret = options.accessKeySecret,
       let instance = options.instanceID {
        mqtt.username = "Signature|\(id)|\(instance)"
        mqtt.password = signaturePassword(accessKeySecret: secret, clientID: options.clientID)
    }

    mqtt.didReceiveTrust = { _, trust, completionHandler in
        trustFailure = TLSFiles.evaluate(trust, host: options.host, ca: setup.serverCA)
        completionHandler(trustFailure == nil)
    }
    mqtt.didConnectAck = { mqtt, ack in
        guard ack == .accept else {
            finish(.failure(refusal(ack)))
            return
        }
        connected = true
        print("connected to \(address) as \(options.clientID) (\(mode.rawValue))")
        mqtt.subscribe(options.topic, qos: .qos1)
    }
    mqtt.didSubscribeTopics = { mqtt, _, failed in
        guard failed.isEmpty else {
            finish(.failure(SampleError("the broker refused the subscription to \(options.topic)")))
            return
        }
        print("subscribed to \(options.topic)")
        mqtt.publish(options.topic, withString: payload, qos: .qos1, retained: false)
        print("published to \(options.topic): \(payload)")
    }
    mqtt.didReceiveMessage = { _, message, _ in
        let text = message.string ?? ""
        print("received on \(message.topic): \(text)")
        if text == payload {
            finish(.success(()))
        }
    }
    mqtt.didDisconnect = { _, error in
        if connected {
            finish(.failure(SampleError("the broker closed the connection\(error.map { ": \($0.localizedDescription)" } ?? "")")))
        } else {
            finish(.failure(connectFailure(error, trustFailure: trustFailure, address: address, mode: mode)))
        }
    }

    guard mqtt.connect(timeout: options.timeout) else {
        throw SampleError("cannot connect to \(address)")
    }
    let waited = finished.wait(timeout: .now() + options.timeout)
    let result: Result<Void, SampleError> = queue.sync {
        if waited == .timedOut {
            let waiting = connected ? "the message to come back" : "the broker to accept the connection"
            finish(.failure(SampleError("timed out after \(seconds) s waiting for \(waiting)")))
        }
        return outcome!
    }
    mqtt.disconnect()
    try result.get()
}

private func refusal(_ ack: CocoaMQTTConnAck) -> SampleError {
    let text: String
    switch ack {
    case .unacceptableProtocolVersion: text = "unacceptable protocol version"
    case .identifierRejected: text = "client identifier rejected"
    case .serverUnavailable: text = "server unavailable"
    case .badUsernameOrPassword: text = "bad user name or password"
    case .notAuthorized: text = "not authorized"
    default: text = "\(ack)"
    }
    let code = ack.rawValue
    let hint = code == 4 ? ": check the AccessKey pair and the instance id"
        : code == 5 ? ": `certmq decisions --limit 5` on the broker says why" : ""
    return SampleError("the broker refused the connection: \(text) (CONNACK return code \(code))\(hint)")
}

private func connectFailure(_ error: Error?, trustFailure: TrustFailure?, address: String, mode: Mode) -> SampleError {
    if let failure = trustFailure {
        let hint = failure.nameMismatch
            ? " (connect with a --host the broker's certificate names, e.g. localhost)"
            : " (is --ca-file the CA that signed the broker's certificate, data/server-ca/ca.pem?)"
        return SampleError("TLS handshake with \(address) failed: \(failure.description)\(hint)")
    }
    let nsError = error as NSError?
    if nsError?.domain == NSPOSIXErrorDomain && nsError?.code == Int(ECONNREFUSED) {
        return SampleError("cannot connect to \(address): connection refused (is certmq running?)")
    }
    // Secure Transport's errSSL… codes lie between -9899 and -9800.
    if let code = nsError?.code, (-9899)...(-9800) ~= code {
        let hint = mode == .mutual
            ? " (the broker did not accept the device certificate: is its CA registered? `certmq decisions --limit 5` on the broker says why)"
            : ""
        return SampleError("TLS handshake with \(address) failed: \(nsError!.localizedDescription)\(hint)")
    }
    if mode == .mutual {
        return SampleError("the broker closed the connection before accepting it: it did not accept the device certificate (is its CA registered?); `certmq decisions --limit 5` on the broker says why")
    }
    return SampleError("the broker closed the connection before accepting it: if it is in mutual mode, it wants a device certificate (use Mutual)")
}
