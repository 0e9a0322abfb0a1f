/// Maps paths to handlers for GET (and HEAD, which the server answers like
/// GET without the body). Unknown path: 404; known path, other method: 405
/// with `Allow`. The query string plays no part. Malformed requests never
/// get here: the server answers those with 400 itself.
public struct HTTPRouter: Sendable {
    private var routes: [String: HTTPHandler] = [:]

    public init() {}

    public mutating func get(_ path: String, _ handler: @escaping HTTPHandler) {
        routes[path] = handler
    }

    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        guard let handler = routes[request.path] else {
            return .text(404, "Not found: \(request.path)\n")
        }
        guard request.method == "GET" || request.method == "HEAD" else {
            return .text(405, "Method \(request.method) not allowed\n", headers: ["Allow": "GET, HEAD"])
        }
        return handler(request)
    }

    /// The router as the server's handler.
    public var handler: HTTPHandler {
        let router = self
        return { router.handle($0) }
    }
}
