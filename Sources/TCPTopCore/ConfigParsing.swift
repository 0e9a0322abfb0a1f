import TCPTopHTTP
import Foundation
import Yams

extension ExporterConfig {
    /// The configuration in the file at `path`, or the defaults when `path` is nil.
    public static func load(path: String?) throws -> ExporterConfig {
        guard let path else { return ExporterConfig() }
        let bytes: [UInt8]
        switch readWholeFile(path) {
        case .success(let read): bytes = read
        case .failure(let problem): throw ConfigError(key: "", problem: "cannot read \(path): \(problem.reason)")
        }
        return try parse(yaml: String(decoding: bytes, as: UTF8.self))
    }

    /// Parses YAML strictly: unknown keys, wrong types and bad values throw a `ConfigError`.
    /// Keys left out keep their defaults; an empty document is all defaults.
    public static func parse(yaml: String) throws -> ExporterConfig {
        var config = ExporterConfig()
        guard let root = try composeBounded(yaml) else { return config }
        let top = try fields(of: root, at: "", known: ["web", "bpf", "connections", "views", "networks", "log"])
        if let web = top["web"] { config.web = try parseWeb(web) }
        if let bpf = top["bpf"] { config.bpf = try parseBPF(bpf) }
        if let connections = top["connections"] { config.connections = try parseConnections(connections) }
        if let views = top["views"] { config.views = try parseViews(views) }
        if let networks = top["networks"] { config.networks = try parseNetworks(networks) }
        if let log = top["log"] { config.log = try parseLog(log) }
        return config
    }
}

/// Why a file could not be read: an errno text ("No such file or directory").
struct FileReadError: Error {
    var reason: String
}

/// The bytes of the file at `path`, with POSIX reads: for an errno text
/// rather than Foundation's multi-line error description.
func readWholeFile(_ path: String) -> Result<[UInt8], FileReadError> {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return .failure(FileReadError(reason: String(cString: strerror(errno)))) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(fd, &buffer, buffer.count)
        if count == 0 { return .success(bytes) }
        if count < 0 {
            if errno == EINTR { continue }
            return .failure(FileReadError(reason: String(cString: strerror(errno))))
        }
        bytes += buffer[0..<count]
    }
}

/// The deepest nesting `parse(yaml:)` hands to the YAML parser.
let maxNesting = 100

/// An upper bound on how deeply `yaml` nests collections, without parsing
/// it: each open flow bracket (`[`, `{`) may hold a collection and an
/// implicit pair; on a line, each indentation column may open a block
/// level (a block sequence may sit at its key's indentation, hence two),
/// and so may each `-`, `?` or `:` followed by a space, up to a comment.
/// Brackets in quotes and comments count too: an overestimate only
/// refuses what no config writes.
func nestingBound(_ yaml: String) -> Int {
    var flowDepth = 0, deepest = 0
    var indentation = 0, indicators = 0, atLineStart = true, inComment = false
    var previous: UInt8 = UInt8(ascii: "\n")
    for byte in yaml.utf8 {
        let isSpace = byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
        let isLineEnd = byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r")
        if (isSpace || isLineEnd) && !inComment,
           previous == UInt8(ascii: "-") || previous == UInt8(ascii: "?") || previous == UInt8(ascii: ":") {
            indicators += 1
        }
        switch byte {
        case _ where isLineEnd:
            indentation = 0; indicators = 0; atLineStart = true; inComment = false
        case UInt8(ascii: " ") where atLineStart: indentation += 1
        case UInt8(ascii: "#") where previous == UInt8(ascii: " ") || previous == UInt8(ascii: "\t") || atLineStart:
            inComment = true
        case UInt8(ascii: "["), UInt8(ascii: "{"): flowDepth += 1
        case UInt8(ascii: "]"), UInt8(ascii: "}"): flowDepth = max(0, flowDepth - 1)
        default: break
        }
        if !isSpace && !isLineEnd { atLineStart = false }
        previous = byte
        deepest = max(deepest, 2 * flowDepth + 2 * indentation + indicators)
    }
    // A last line without its line end.
    if !inComment, previous == UInt8(ascii: "-") || previous == UInt8(ascii: "?") || previous == UInt8(ascii: ":") {
        deepest = max(deepest, 2 * flowDepth + 2 * indentation + indicators + 1)
    }
    return deepest
}

private func parseWeb(_ section: Field) throws -> WebConfig {
    var web = WebConfig()
    let keys = try fields(
        of: section.node, at: section.key,
        known: ["listen_addresses", "telemetry_path", "max_requests", "max_connections", "read_timeout", "write_timeout", "idle_timeout",
                "config_file"])
    if let field = keys["listen_addresses"] {
        let items = try list(field, expected: "a list of host:port addresses")
        guard !items.isEmpty else { throw field.error("must list at least one address") }
        var seen = Set<ListenAddress>()
        web.listenAddresses = try items.map { item in
            let text = try scalar(item, expected: "a host:port address")
            let address: ListenAddress
            do { address = try ListenAddress.parse(text) } catch { throw item.error("\(error)") }
            guard seen.insert(address).inserted else { throw item.error("\"\(text)\" is listed twice") }
            return address
        }
    }
    if let field = keys["telemetry_path"] {
        let path = try scalar(field, expected: WebConfig.telemetryPathRule)
        if let problem = WebConfig.telemetryPathProblem(path) { throw field.error(problem) }
        web.telemetryPath = path
    }
    if let field = keys["max_requests"] { web.maxRequests = try integer(field, in: 1...1_000_000) }
    if let field = keys["max_connections"] { web.maxConnections = try integer(field, in: WebConfig.maxConnectionsRange) }
    if let field = keys["read_timeout"] { web.readTimeout = try positiveDuration(field, atMost: WebConfig.maxTimeout) }
    if let field = keys["write_timeout"] { web.writeTimeout = try positiveDuration(field, atMost: WebConfig.maxTimeout) }
    if let field = keys["idle_timeout"] { web.idleTimeout = try positiveDuration(field, atMost: WebConfig.maxTimeout) }
    if let field = keys["config_file"] {
        // "" is none, as for --web.config.file (exporter-toolkit's flag default).
        let path = try scalar(field, expected: "the path of an exporter-toolkit web config file, or \"\" for none")
        web.configFile = path.isEmpty ? nil : path
    }
    return web
}

private func parseBPF(_ section: Field) throws -> BPFConfig {
    var bpf = BPFConfig()
    let keys = try fields(of: section.node, at: section.key, known: ["map_capacity", "attach_mode", "read_path"])
    if let field = keys["map_capacity"] { bpf.mapCapacity = try integer(field, in: BPFConfig.mapCapacityRange) }
    if let field = keys["attach_mode"] { bpf.attachMode = try choice(field) }
    if let field = keys["read_path"] { bpf.readPath = try choice(field) }
    return bpf
}

private func parseConnections(_ section: Field) throws -> ConnectionsConfig {
    var connections = ConnectionsConfig()
    let keys = try fields(of: section.node, at: section.key, known: ["closed_retention", "poll_interval"])
    if let field = keys["closed_retention"] { connections.closedRetention = try positiveDuration(field, atMost: ConnectionsConfig.maxClosedRetention) }
    if let field = keys["poll_interval"] { connections.pollInterval = try positiveDuration(field, atMost: ConnectionsConfig.maxPollInterval) }
    return connections
}

private func parseLog(_ section: Field) throws -> LogConfig {
    var log = LogConfig()
    let keys = try fields(of: section.node, at: section.key, known: ["level", "format"])
    if let field = keys["level"] { log.level = try choice(field) }
    if let field = keys["format"] { log.format = try choice(field) }
    return log
}

private func parseViews(_ field: Field) throws -> [ViewConfig] {
    let items = try list(field, expected: "a list of views")
    guard !items.isEmpty else { throw field.error("must list at least one view") }
    var prefixUsers: [String: String] = [:]
    return try items.map { item in
        let view = try parseView(item)
        if let first = prefixUsers[view.prefix] {
            throw ConfigError(key: item.key + ".prefix", problem: "\"\(view.prefix)\" is already used by \(first)")
        }
        prefixUsers[view.prefix] = item.key
        return view
    }
}

private func parseView(_ item: Field) throws -> ViewConfig {
    guard item.node.mapping != nil else { throw item.error("must be a mapping of prefix, labels, max_series, got \(describe(item.node))") }
    var view = ViewConfig()
    let keys = try fields(
        of: item.node, at: item.key,
        known: ["prefix", "labels", "max_series", "connect_duration_buckets", "connection_duration_buckets", "rtt_buckets",
                "ephemeral_client_port"])
    if let field = keys["prefix"] {
        let expected = "a metric name prefix matching [a-zA-Z_:][a-zA-Z0-9_:]*"
        let prefix = try scalar(field, expected: expected)
        guard isMetricNamePrefix(prefix) else { throw field.error("must be \(expected), got \"\(prefix)\"") }
        view.prefix = prefix
    }
    if let field = keys["labels"] {
        var kept = Set<ConnectionLabel>()
        for labelItem in try list(field, expected: "a list of labels") {
            let label: ConnectionLabel = try choice(labelItem)
            guard kept.insert(label).inserted else { throw labelItem.error("\"\(label.rawValue)\" is listed twice") }
        }
        // Labels are always written in one canonical order, whatever order the file lists them in.
        view.labels = ConnectionLabel.allCases.filter(kept.contains)
    }
    if let field = keys["max_series"] {
        view.maxSeries = try integer(field, in: 0...Int(Int32.max), note: " (0 = no limit)")
    }
    if let field = keys["connect_duration_buckets"] { view.connectDurationBuckets = try buckets(field) }
    if let field = keys["connection_duration_buckets"] { view.connectionDurationBuckets = try buckets(field) }
    if let field = keys["rtt_buckets"] { view.rttBuckets = try buckets(field) }
    if let field = keys["ephemeral_client_port"] { view.ephemeralClientPort = try boolean(field) }
    return view
}

/// `networks: {NAME: [PREFIX, ...], ...}`: a prefix may be in one network only.
private func parseNetworks(_ section: Field) throws -> [NamedNetwork] {
    if isNull(section.node) { return [] }
    guard let mapping = section.node.mapping else {
        throw section.error("must be a mapping of network names to lists of address prefixes, got \(describe(section.node))")
    }
    var networks: [NamedNetwork] = []
    var owner: [IPPrefix: String] = [:]
    for (keyNode, valueNode) in mapping {
        guard let name = keyNode.scalar?.string, !name.isEmpty else {
            throw section.error("network names must be non-empty strings, got \(describe(keyNode))")
        }
        let field = Field(node: valueNode, key: section.key + "." + name)
        guard networks.allSatisfy({ $0.name != name }) else { throw field.error("is listed twice") }
        let items = try list(field, expected: "a list of address prefixes like [10.0.0.0/8, fc00::/7]")
        guard !items.isEmpty else { throw field.error("must list at least one address prefix") }
        var prefixes: [IPPrefix] = []
        for item in items {
            let text = try scalar(item, expected: "an address prefix like 10.0.0.0/8")
            let prefix: IPPrefix
            switch IPPrefix.parse(text) {
            case .success(let parsed): prefix = parsed
            case .failure(let problem): throw item.error(problem.description)
            }
            if let first = owner[prefix] { throw item.error("\(prefix) is already in network \"\(first)\"") }
            owner[prefix] = name
            prefixes.append(prefix)
        }
        networks.append(NamedNetwork(name: name, prefixes: prefixes))
    }
    return networks
}

/// A histogram's upper bounds: a list of seconds, checked by `ViewConfig.bucketsProblem`.
private func buckets(_ field: Field) throws -> [Double] {
    let expected = "a list of upper bounds in seconds, like [0.001, 0.01, 0.1, 1]"
    let bounds = try list(field, expected: expected).map { item in
        let text = try scalar(item, expected: "a number of seconds")
        guard let value = Double(text), value.isFinite else { throw item.error("must be a number of seconds, got \"\(text)\"") }
        return value
    }
    if let problem = ViewConfig.bucketsProblem(bounds) { throw field.error(problem) }
    return bounds
}

private func isMetricNamePrefix(_ text: String) -> Bool {
    func isStart(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ":")
    }
    guard let first = text.utf8.first, isStart(first) else { return false }
    return text.utf8.allSatisfy { isStart($0) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) }
}

// MARK: - Typed readers of YAML nodes (the web config file's reader uses them too)

/// A node with the dotted path that names it in errors, like `views[0].labels`.
struct Field {
    var node: Node
    var key: String

    func error(_ problem: String) -> ConfigError { ConfigError(key: key, problem: problem) }
}

/// The keys of a mapping, after rejecting unknown, duplicate and non-string keys.
/// A null section (every key commented out) reads as an empty mapping.
func fields(of node: Node, at path: String, known: [String]) throws -> [String: Field] {
    let here = Field(node: node, key: path)
    if isNull(node) { return [:] }
    guard let mapping = node.mapping else {
        throw here.error("must be a mapping with keys \(known.joined(separator: ", ")), got \(describe(node))")
    }
    var result: [String: Field] = [:]
    for (keyNode, value) in mapping {
        guard let name = keyNode.scalar?.string else {
            throw here.error("keys must be plain names, got \(describe(keyNode))")
        }
        let field = Field(node: value, key: path.isEmpty ? name : "\(path).\(name)")
        guard known.contains(name) else {
            throw field.error("unknown key (known keys here: \(known.joined(separator: ", ")))")
        }
        guard result[name] == nil else { throw field.error("given more than once") }
        result[name] = field
    }
    return result
}

func isNull(_ node: Node) -> Bool {
    node.scalar != nil && node.tag == Tag(.null)
}

func describe(_ node: Node) -> String {
    if isNull(node) { return "nothing" }
    if let scalar = node.scalar { return "\"\(scalar.string)\"" }
    return node.mapping != nil ? "a mapping" : "a list"
}

func scalar(_ field: Field, expected: String) throws -> String {
    guard !isNull(field.node), let scalar = field.node.scalar else {
        throw field.error("must be \(expected), got \(describe(field.node))")
    }
    return scalar.string
}

func list(_ field: Field, expected: String) throws -> [Field] {
    guard let sequence = field.node.sequence else {
        throw field.error("must be \(expected), got \(describe(field.node))")
    }
    return sequence.enumerated().map { Field(node: $1, key: "\(field.key)[\($0)]") }
}

private func integer(_ field: Field, in range: ClosedRange<Int>, note: String = "") throws -> Int {
    let expected = "an integer between \(range.lowerBound) and \(range.upperBound)\(note)"
    let text = try scalar(field, expected: expected)
    guard let value = Int(text), range.contains(value) else {
        throw field.error("must be \(expected), got \"\(text)\"")
    }
    return value
}

/// Every duration key has an upper bound: each feeds a timer or a deadline,
/// and a value past what those can hold would trap where it is converted
/// (a dispatch time counts nanoseconds in 64 bits: at most 292 years).
private func positiveDuration(_ field: Field, atMost limit: Duration) throws -> Duration {
    let expected = "a duration like 500ms, 30s, 5m, 1h or 1m30s"
    let text = try scalar(field, expected: expected)
    let tooLong = field.error("must be at most \(durationText(limit)), got \"\(text)\"")
    switch readDuration(text) {
    case .invalid: throw field.error("must be \(expected), got \"\(text)\"")
    case .tooLong: throw tooLong
    case .duration(let duration):
        guard duration > .zero else { throw field.error("must be longer than zero, got \"\(text)\"") }
        guard duration <= limit else { throw tooLong }
        return duration
    }
}

func choice<Choice: CaseIterable & RawRepresentable>(_ field: Field) throws -> Choice
where Choice.RawValue == String {
    let expected = "one of " + Choice.allCases.map(\.rawValue).joined(separator: ", ")
    let text = try scalar(field, expected: expected)
    guard let value = Choice(rawValue: text) else { throw field.error("must be \(expected), got \"\(text)\"") }
    return value
}

/// Error texts (Yams adds a source snippet on later lines) cut to their first line.
func oneLine(_ error: Error) -> String {
    String(describing: error).split(whereSeparator: \.isNewline).first.map(String.init) ?? "unknown error"
}

/// The YAML's root node (nil for an empty document), or a one-line error.
/// Yams composes nodes recursively: 10,000 nested "[" overflowed the stack
/// (a segfault), so depth is bounded first; no config nests past a handful.
func composeBounded(_ yaml: String) throws -> Node? {
    guard nestingBound(yaml) <= maxNesting else {
        throw ConfigError(key: "", problem: "invalid YAML: nested more than \(maxNesting) levels deep")
    }
    do {
        return try Yams.compose(yaml: yaml)
    } catch {
        throw ConfigError(key: "", problem: "invalid YAML: \(oneLine(error))")
    }
}
