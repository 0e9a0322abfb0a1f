import Foundation
import PackagePlugin

/// Compiles bpf/tcptop.bpf.c with the toolchain's clang (`-target bpf`) and
/// embeds the object, base64-encoded, as a Swift string in the target that
/// uses this plugin. It also turns the object's symbol table into two Swift
/// enums, `BPFProgram` and `BPFMap`, so that Swift names programs and maps
/// only through them: a program renamed in C is a build error in Swift, not
/// a "not found" at run time. The object is built from source on every
/// machine: none is committed.
@main
struct BPFCompiler: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let bpfDirectory = context.package.directoryURL.appending(path: "bpf")
        let source = bpfDirectory.appending(path: "tcptop.bpf.c")
        // No depfiles for build-tool plugins: every header is listed as an input.
        let headers = try FileManager.default.contentsOfDirectory(atPath: bpfDirectory.path)
            .filter { $0.hasSuffix(".h") }.sorted().map { bpfDirectory.appending(path: $0) }
        let object = context.pluginWorkDirectoryURL.appending(path: "tcptop.bpf.o")
        let embedded = context.pluginWorkDirectoryURL.appending(path: "EmbeddedBPFObject.swift")
        let names = context.pluginWorkDirectoryURL.appending(path: "BPFObjectNames.swift")
        let clang = try context.tool(named: "clang").url
        let objdump = try context.tool(named: "llvm-objdump").url

        #if arch(x86_64)
        let targetArch = "x86"
        let multiarch = "x86_64-linux-gnu"
        #elseif arch(arm64)
        let targetArch = "arm64"
        let multiarch = "aarch64-linux-gnu"
        #else
        #error("unsupported architecture for the BPF build")
        #endif

        let namesScript = context.package.directoryURL.appending(path: "Plugins/BPFCompiler/object-names.awk")
        let script = """
            set -e
            "$0" -g -O2 -Wall -target bpf -mcpu=v2 -D__TARGET_ARCH_\(targetArch) \
              -I/usr/include/\(multiarch) -I"$1" -c "$1/tcptop.bpf.c" -o "$2"
            { printf 'let embeddedBPFObjectBase64 = "'; base64 -w0 "$2"; echo '"'; } > "$3"
            "$4" -t "$2" | awk -f "$6" > "$5"
            """
        return [
            .buildCommand(
                displayName: "Compiling BPF program tcptop.bpf.c",
                executable: URL(filePath: "/bin/sh"),
                arguments: ["-c", script, clang.path, bpfDirectory.path, object.path, embedded.path,
                            objdump.path, names.path, namesScript.path],
                inputFiles: [source, namesScript] + headers,
                outputFiles: [embedded, names]
            )
        ]
    }
}
