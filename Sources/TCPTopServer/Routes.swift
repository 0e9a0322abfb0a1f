import TCPTopHTTP
import TCPTopCore

/// What the exporter answers: metrics at the telemetry path, a landing page
/// at "/"; the router gives 404 elsewhere and 405 for methods other than
/// GET and HEAD.
func exporterRouter(telemetryPath: String, metrics: @escaping @Sendable () -> [UInt8]) -> HTTPRouter {
    var router = HTTPRouter()
    router.get("/") { _ in
        HTTPResponse(status: 200, headers: ["Content-Type": "text/html; charset=utf-8"],
                     body: Array(landingPage(telemetryPath: telemetryPath).utf8))
    }
    router.get(telemetryPath) { _ in
        // Streamed: produced only when a body is sent (HEAD reads no kernel map),
        // and written within the server's concurrency limit.
        .stream(headers: ["Content-Type": ExpositionWriter.contentType]) { sink in
            let text = metrics()
            var offset = 0
            while offset < text.count {
                let end = min(offset + 64 * 1024, text.count)
                try sink(text[offset..<end])
                offset = end
            }
        }
    }
    return router
}

private func landingPage(telemetryPath: String) -> String {
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
