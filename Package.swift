// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "tcptop-exporter",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "tcptop-exporter", targets: ["tcptop-exporter"]),
        .executable(name: "tcptop", targets: ["tcptop"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // The one place where C is declared: libbpf, libsystemd, zlib, libcrypt, OpenSSL and a tiny shim.
        .target(
            name: "CTCPTop",
            linkerSettings: [
                .linkedLibrary("bpf"), .linkedLibrary("elf"), .linkedLibrary("z"), .linkedLibrary("systemd"), .linkedLibrary("crypt"),
                .linkedLibrary("ssl"), .linkedLibrary("crypto"),
            ]
        ),
        // Compiles bpf/*.bpf.c with clang -target bpf and embeds the object into TCPTopBPF.
        .plugin(name: "BPFCompiler", capability: .buildTool()),
        // HTTP/1.1 on POSIX sockets: listen addresses, request parser, server,
        // client. Knows nothing of metrics or BPF.
        .target(
            name: "TCPTopHTTP",
            dependencies: ["CTCPTop", .product(name: "Logging", package: "swift-log")]
        ),
        // Pure Swift: connection records, registry, exposition, config. Testable without root.
        .target(name: "TCPTopCore", dependencies: ["TCPTopHTTP", .product(name: "Yams", package: "Yams")]),
        // The only Swift that touches libbpf: load, attach, read maps.
        .target(
            name: "TCPTopBPF",
            dependencies: ["CTCPTop", "TCPTopCore"],
            plugins: ["BPFCompiler"]
        ),
        // The daemon: metrics routes, sd_notify, signals, logging.
        .target(
            name: "TCPTopServer",
            dependencies: [
                "CTCPTop", "TCPTopCore", "TCPTopBPF", "TCPTopHTTP",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "tcptop-exporter",
            dependencies: ["TCPTopServer", "TCPTopHTTP", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "tcptop",
            // Its own option parser (TopOptions.swift: the original's options
            // and usage text), so no ArgumentParser: generate-manual skips it.
            dependencies: ["TCPTopCore", "TCPTopBPF", "TCPTopHTTP"]
        ),
        // `make bench`: the figures of README's performance table.
        .executableTarget(
            name: "tcptop-bench",
            dependencies: ["TCPTopCore", "TCPTopBPF", "TCPTopHTTP", "CTCPTop"]
        ),
        // Child processes for the tests, started with posix_spawn, not
        // Foundation's Process (see ChildProcess.swift for why).
        .target(name: "TestChildProcess", dependencies: ["CTCPTop"], path: "Tests/TestChildProcess"),
        .testTarget(name: "TestChildProcessTests", dependencies: ["TestChildProcess"]),
        .testTarget(name: "TCPTopCoreTests", dependencies: ["TCPTopCore"]),
        .testTarget(name: "TCPTopHTTPTests", dependencies: ["TCPTopHTTP", "CTCPTop", "TestChildProcess"]),
        .testTarget(name: "TCPTopServerTests", dependencies: ["TCPTopServer"]),
        .testTarget(name: "EndToEndTests", dependencies: ["TCPTopCore", "TCPTopBPF", "TCPTopHTTP", "TCPTopServer", "TestChildProcess"]),
    ]
)
