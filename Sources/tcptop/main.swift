import Glibc
import TCPTopCore

// tcptop: options in, exit status out. Parsing, intervals and the table
// live in TCPTopCore (Top*.swift); this target only wires them to the
// tracer, the exporter client, the clock, signals and stdout.

// Before any other thread exists, so that every thread inherits the mask:
// SIGINT and SIGTERM are then only taken by StopSignals' waits.
StopSignals.block()
signal(SIGPIPE, SIG_IGN)

let status: Int32
do {
    switch try TopArguments.parse(Array(CommandLine.arguments.dropFirst())) {
    case .help:
        Output.write(TopArguments.usage)
        status = 0
    case .run(let options):
        status = TopRunner(options: options).run()
    }
} catch {
    Output.error("\(error)")
    status = 2
}
exit(status)
