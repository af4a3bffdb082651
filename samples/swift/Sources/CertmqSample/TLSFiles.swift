import Foundation
import Security

/// What the TLS connection needs: the CA that must have signed the broker's certificate, and
/// for mutual TLS the device's identity (its certificate with its private key).
public struct TLSSetup {
    public let serverCA: SecCertificate
    public let deviceIdentity: SecIdentity?

    public init(serverCA: SecCertificate, deviceIdentity: SecIdentity?) {
        self.serverCA = serverCA
        self.deviceIdentity = deviceIdentity
    }
}

public enum TLSFiles {
    /// The first certificate of a PEM file (Security reads DER: the Base64 between the markers).
    public static func certificate(pemFile: String) throws -> SecCertificate {
        let text = try String(contentsOfFile: pemFile, encoding: .utf8)
        guard let begin = text.range(of: "-----BEGIN CERTIFICATE-----"),
              let end = text.range(of: "-----END CERTIFICATE-----", range: begin.upperBound..<text.endIndex)
        else {
            throw SampleError("\(pemFile) holds no PEM certificate")
        }
        let base64 = text[begin.upperBound..<end.lowerBound].components(separatedBy: .whitespacesAndNewlines).joined()
        guard let der = Data(base64Encoded: base64),
              let certificate = SecCertificateCreateWithData(nil, der as CFData)
        else {
            throw SampleError("\(pemFile) holds a certificate that cannot be read")
        }
        return certificate
    }

    /// The identity (certificate and private key) of a PKCS#12 bundle.
    public static func identity(p12File: String, password: String) throws -> SecIdentity {
        let data = try Data(contentsOf: URL(fileURLWithPath: p12File))
        var items: CFArray?
        let status = SecPKCS12Import(
            data as CFData, [kSecImportExportPassphrase as String: password] as CFDictionary, &items)
        guard status == errSecSuccess else {
            let reason = SecCopyErrorMessageString(status, nil) as String? ?? "OSStatus \(status)"
            throw SampleError("cannot import \(p12File): \(reason) (is --p12-password right?)")
        }
        guard let first = (items as? [[String: Any]])?.first, let identity = first[kSecImportItemIdentity as String]
        else {
            throw SampleError("\(p12File) holds no certificate with its key")
        }
        return identity as! SecIdentity  // a CF type: the cast cannot fail once the key is there
    }

    /// The check of the broker's certificate: a chain to `ca` alone (not the system's roots), and
    /// the host name in the certificate. Returns nil when the certificate is trusted, else why not.
    public static func evaluate(_ trust: SecTrust, host: String, ca: SecCertificate) -> TrustFailure? {
        SecTrustSetPolicies(trust, SecPolicyCreateSSL(true, host as CFString))
        SecTrustSetAnchorCertificates(trust, [ca] as CFArray)
        SecTrustSetAnchorCertificatesOnly(trust, true)
        var error: CFError?
        if SecTrustEvaluateWithError(trust, &error) {
            return nil
        }
        let description = error.map { CFErrorCopyDescription($0) as String } ?? "the broker's certificate is not trusted"
        let code = error.map { CFErrorGetCode($0) } ?? 0
        let hostNameMismatch = -67602  // errSecHostNameMismatch
        return TrustFailure(description: description, nameMismatch: code == hostNameMismatch)
    }
}

public struct TrustFailure {
    public let description: String
    public let nameMismatch: Bool
}
