// swift-tools-version:5.7
// certmq client samples for Apple platforms with CocoaMQTT: one-way TLS (OneWay) and mutual
// TLS (Mutual) as command-line programs for macOS; CertmqSample holds the code an iOS app uses
// the same way.

import PackageDescription

let package = Package(
    name: "CertmqSamples",
    platforms: [.macOS(.v12), .iOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/emqx/CocoaMQTT.git", from: "2.1.6"),
    ],
    targets: [
        .target(name: "CertmqSample", dependencies: [.product(name: "CocoaMQTT", package: "CocoaMQTT")]),
        .executableTarget(name: "OneWay", dependencies: ["CertmqSample"]),
        .executableTarget(name: "Mutual", dependencies: ["CertmqSample"]),
    ]
)
