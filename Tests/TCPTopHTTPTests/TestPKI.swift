import Foundation
import Glibc
import TestChildProcess

/// Certificates made at test time with Debian's openssl CLI, in a temp
/// directory: a server CA and its server certificate (SANs 127.0.0.1, ::1,
/// localhost), a client CA with two client certificates (SAN
/// scraper.example, allowed; SAN other.example, not), and a client
/// certificate from an unrelated CA.
struct TestPKI {
    let directory: String
    func path(_ name: String) -> String { directory + "/" + name }

    init() throws {
        directory = NSTemporaryDirectory() + "tls-pki-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for ca in ["ca", "client-ca", "rogue-ca"] { try makeCA(ca) }
        try issue("server", by: "ca", serial: 1, san: "IP:127.0.0.1,IP:::1,DNS:localhost", usage: "serverAuth")
        try issue("elsewhere", by: "ca", serial: 5, san: "DNS:elsewhere.example", usage: "serverAuth")
        try issue("client", by: "client-ca", serial: 2, san: "DNS:scraper.example,email:ops@example.org", usage: "clientAuth")
        try issue("client-other", by: "client-ca", serial: 3, san: "DNS:other.example", usage: "clientAuth")
        try issue("client-rogue", by: "rogue-ca", serial: 4, san: "DNS:scraper.example", usage: "clientAuth")
    }

    func makeCA(_ name: String) throws {
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                     "-subj", "/CN=\(name)", "-keyout", path("\(name).key"), "-out", path("\(name).crt"),
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    }

    /// `name`.crt and `name`.key, signed by `ca`, with this serial number.
    func issue(_ name: String, by ca: String, serial: Int, san: String, usage: String, to output: String? = nil) throws {
        let base = output ?? name
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                     "-subj", "/CN=\(name)", "-CA", path("\(ca).crt"), "-CAkey", path("\(ca).key"), "-set_serial", "\(serial)",
                     "-addext", "subjectAltName=\(san)", "-addext", "extendedKeyUsage=\(usage)",
                     "-addext", "basicConstraints=CA:FALSE",
                     "-keyout", path("\(base).key"), "-out", path("\(base).crt")])
    }

    private func openssl(_ arguments: [String]) throws {
        let result = runTool("/usr/bin/openssl", arguments)
        guard result.status == 0 else { throw ToolError(description: "openssl \(arguments.prefix(2)): \(result.stderr)") }
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// Runs a tool to its end (at most `timeout` seconds), with `input` on stdin.
func runTool(_ path: String, _ arguments: [String], input: String = "", timeout: Double = 30)
    -> (status: Int32, stdout: String, stderr: String)
{
    let process = ChildProcess()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let directory = NSTemporaryDirectory() + "run-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let (inPath, outPath, errPath) = (directory + "/in", directory + "/out", directory + "/err")
    FileManager.default.createFile(atPath: inPath, contents: Data(input.utf8))
    FileManager.default.createFile(atPath: outPath, contents: nil)
    FileManager.default.createFile(atPath: errPath, contents: nil)
    do {
        process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: inPath))
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        try process.run()
    } catch {
        return (-1, "", "\(path): \(error)")
    }
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning {
        guard Date() < deadline else {
            process.signal(SIGKILL)  // not SIGTERM: the child may have this thread's mask, which can block it
            process.waitUntilExit()
            return (-1, "", "\(path) did not finish within \(timeout) s")
        }
        usleep(2_000)
    }
    let read = { (file: String) in (try? String(contentsOfFile: file, encoding: .utf8)) ?? "" }
    return (process.terminationStatus, read(outPath), read(errPath))
}
