import TCPTopCore

/// What the exporter answers at which path: the telemetry path, a landing
/// page at "/", 404 elsewhere, 405 for methods other than GET and HEAD.
struct Routes: Sendable {
    var telemetryPath: String

    func respond(to request: HTTPRequest, metrics: () -> [UInt8]) -> HTTPResponse {
        let path = request.path
        guard path == telemetryPath || path == "/" else {
            return .text(404, "404 page not found\n")
        }
        guard request.method == "GET" || request.method == "HEAD" else {
            return .text(405, "405 method not allowed\n", headers: ["Allow": "GET, HEAD"])
        }
        if path == "/" {
            return HTTPResponse(status: 200, headers: ["Content-Type": "text/html; charset=utf-8"], body: Array(landingPage.utf8))
        }
        return HTTPResponse(status: 200, headers: ["Content-Type": ExpositionWriter.contentType], body: metrics())
    }

    private var landingPage: String {
        """
        <!DOCTYPE html>
        <html>
        <head><title>tcptop-exporter</title></head>
        <body>
        <h1>tcptop-exporter</h1>
        <p>TCP bytes sent and received per connection and process, counted in the kernel with eBPF.</p>
        <p><a href="\(telemetryPath)">Metrics</a></p>
        <p>Version \(tcptopVersion)</p>
        </body>
        </html>

        """
    }
}
