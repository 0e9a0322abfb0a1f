import Testing
import TCPTopCore

@Suite struct TopOptionsTests {
    func options(_ arguments: String) throws -> TopOptions {
        let parsed = try TopArguments.parse(arguments.split(separator: " ").map(String.init))
        guard case .run(let options) = parsed else { throw TopUsageError("not a run: \(parsed)") }
        return options
    }

    func error(_ arguments: [String]) -> String? {
        do {
            _ = try TopArguments.parse(arguments)
            return nil
        } catch {
            return error.description
        }
    }

    @Test func defaultsAreTheOriginals() throws {
        let defaults = try options("")
        #expect(defaults == TopOptions())
        #expect(defaults.interval == 1 && defaults.count == nil && defaults.rows == 20 && defaults.sort == .all)
        #expect(!defaults.noClear && !defaults.noSummary && defaults.pid == nil && defaults.family == nil)
    }

    @Test func theOriginalsOptions() throws {
        let parsed = try options("-C -S -p 181 5 10")
        #expect(parsed.noClear && parsed.noSummary && parsed.pid == 181 && parsed.interval == 5 && parsed.count == 10)
        #expect(try options("--noclear --nosummary --pid 181 5") == parsed.with { $0.count = nil })
        #expect(try options("-CS -p181 5 10") == parsed)
        #expect(try options("--pid=181 -SC 5 10") == parsed)
        #expect(try options("-Cp 181 5 -S 10") == parsed)  // options may follow positionals
    }

    @Test func theNewerToolsExtras() throws {
        #expect(try options("-4").family == .ipv4)
        #expect(try options("--ipv6").family == .ipv6)
        #expect(try options("-r 5").rows == 5)
        #expect(try options("--rows=7").rows == 7)
        #expect(try options("-s sent").sort == .sent)
        #expect(try options("--sort received").sort == .received)
        #expect(try options("-c /sys/fs/cgroup/unified/x").cgroupPath == "/sys/fs/cgroup/unified/x")
        #expect(try options("--from http://[::1]:9100/m 2").fromURL == TopMetricsURL(host: "::1", port: 9100, path: "/m"))
        #expect(try options("-- 3 4").count == 4)
    }

    @Test func healthColumns() throws {
        #expect(try !options("").healthColumns)
        #expect(try options("-R").healthColumns)
        #expect(try options("--retrans 5") == TopOptions().with { $0.healthColumns = true; $0.interval = 5 })
        #expect(try options("-CRS 2") == TopOptions().with {
            $0.noClear = true; $0.healthColumns = true; $0.noSummary = true; $0.interval = 2
        })
        #expect(try options("-R --from db1").fromURL == TopMetricsURL(host: "db1"))
        #expect(TopArguments.usage.contains("[-s {all,sent,received}] [-R] [-L] [--from URL]"))
        #expect(TopArguments.usage.contains("  -R, --retrans         add columns RETRANS"))
    }

    @Test func lifetimes() throws {
        #expect(try !options("").lifetimes)
        #expect(try options("-L").lifetimes && options("--lifetimes").lifetimes)
        #expect(try options("-CLR 2") == TopOptions().with {
            $0.noClear = true; $0.lifetimes = true; $0.healthColumns = true; $0.interval = 2
        })
        #expect(TopArguments.usage.contains("  -L, --lifetimes       after each interval, a line per connection"))
    }

    @Test func help() throws {
        #expect(try TopArguments.parse(["-h"]) == .help)
        #expect(try TopArguments.parse(["-C", "--help", "bogus"]) == .help)
        #expect(TopArguments.usage.hasPrefix("usage: tcptop [-h] [-C] [-S] [-p PID]"))
        #expect(TopArguments.usage.contains("tcptop -p 181          # only trace PID 181"))
    }

    @Test(arguments: [
        (["-L", "--from", "db1"], "-L/--lifetimes cannot be used with --from (an exporter serves lifetimes as histograms, not per connection)"),
        (["--lifetimes=1"], "--lifetimes takes no value"),
        (["0"], "invalid interval \"0\": must be a positive whole number of seconds"),
        (["-1"], "invalid interval \"-1\": must be a positive whole number of seconds"),
        (["1.5"], "invalid interval \"1.5\": must be a positive whole number of seconds"),
        (["x"], "invalid interval \"x\": must be a positive whole number of seconds"),
        (["1", "0"], "invalid count \"0\": must be a positive whole number of outputs"),
        (["1", "2", "3"], "unexpected argument \"3\" (usage: tcptop [options] [interval] [count])"),
        (["-4", "-6"], "-4/--ipv4 and -6/--ipv6 cannot be used together (give neither for both families)"),
        (["-46"], "-4/--ipv4 and -6/--ipv6 cannot be used together (give neither for both families)"),
        (["-p", "abc"], "-p/--pid: invalid PID \"abc\": must be a positive number"),
        (["-p", "0"], "-p/--pid: invalid PID \"0\": must be a positive number"),
        (["--pid=-3"], "-p/--pid: invalid PID \"-3\": must be a positive number"),
        (["-p"], "-p/--pid: expected a value"),
        (["-s", "bytes"], "-s/--sort: invalid sort key \"bytes\": must be all, sent or received"),
        (["-r", "0"], "-r/--rows: invalid row count \"0\": must be a positive number"),
        (["-x"], "unrecognized option \"-x\" (see tcptop -h)"),
        (["--noclear=yes"], "--noclear takes no value"),
        (["--retrans=1"], "--retrans takes no value"),
        (["-Rr"], "-r/--rows: expected a value"),
        (["-Rz"], "unrecognized option \"-z\" (see tcptop -h)"),
        (["--bogus"], "unrecognized option \"--bogus\" (see tcptop -h)"),
        (["--from", "ftp://h/"], "--from: \"ftp://h/\": only http:// and https:// URLs are supported"),
        (["--from", "h:99999"], "--from: \"h:99999\": invalid port \"99999\""),
        (["--from", "h", "-c", "/sys/fs/cgroup"], "-c/--cgroup cannot be used with --from (the exporter has no cgroup labels)"),
    ])
    func usageErrors(arguments: [String], message: String) {
        #expect(error(arguments) == message)
    }
}

extension TopOptions {
    func with(_ change: (inout TopOptions) -> Void) -> TopOptions {
        var copy = self
        change(&copy)
        return copy
    }
}
