import Testing
import TCPTopCore

/// web.telemetry_path and --web.telemetry-path share one rule
/// (WebConfig.telemetryPathProblem): a path the router could never match
/// is refused in one line, not served as a 404 on every scrape.
@Suite struct TelemetryPathTests {
    @Test(arguments: ["/metrics", "/probe", "/a/b/c", "/x-y_z.txt", "/%3F", "/a;b=c"])
    func servablePathsPass(path: String) throws {
        #expect(WebConfig.telemetryPathProblem(path) == nil)
        #expect(try ExporterConfig.parse(yaml: "web:\n  telemetry_path: '\(path)'\n").web.telemetryPath == path)
    }

    @Test(arguments: ["/a?b", "/metrics?", "/a#b", "/", "metrics", "", "/a b", "/a\tb", "/a\nb"])
    func unservablePathsFailTheSameWayForTheKeyAndTheFlag(path: String) throws {
        let problem = try #require(WebConfig.telemetryPathProblem(path))
        #expect(problem == ##"must be a path that starts with "/" and is not "/", without spaces, "?" or "#", got "\##(path)""##)
        // The config key gives that same text, under its name.
        let yaml = "web:\n  telemetry_path: \"\(path.replacingOccurrences(of: "\t", with: "\\t").replacingOccurrences(of: "\n", with: "\\n"))\"\n"
        #expect(throws: ConfigError(key: "web.telemetry_path", problem: problem)) { try ExporterConfig.parse(yaml: yaml) }
    }
}
