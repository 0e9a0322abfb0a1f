/// The version of tcptop-exporter and tcptop, shown by --version and in
/// the build-info metric.
public let tcptopVersion = "0.1.0"
