/// The challenge a 401 carries.
public let basicAuthChallenge = "Basic realm=\"tcptop-exporter\""

/// `handler` behind basic auth (when `settings` names users) on every path,
/// with the configured headers added to every response, the 401s too.
/// `settings` is asked on each request: the web config file may have
/// changed since the last one. Knows nothing of the server's internals.
public func securedHandler(_ handler: @escaping HTTPHandler, authenticator: BasicAuthenticator,
                           settings: @escaping @Sendable () -> HTTPSecuritySettings) -> HTTPHandler {
    { request in
        let current = settings()
        var response: HTTPResponse
        if current.basicAuthUsers.isEmpty
            || authenticator.allows(authorization: request.headers["Authorization"], users: current.basicAuthUsers) {
            response = handler(request)
        } else {
            response = .text(401, "Unauthorized\n", headers: ["WWW-Authenticate": basicAuthChallenge])
        }
        for (name, value) in current.headers { response.headers[name] = value }
        return response
    }
}
