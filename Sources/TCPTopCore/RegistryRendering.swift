extension ConnectionRegistry {
    public static let sentHelp =
        "Bytes sent over TCP, summed over the connection ends that share these labels."
    public static let receivedHelp =
        "Bytes received over TCP, summed over the connection ends that share these labels."

    /// Writes both families of every view.
    public func render(into writer: inout ExpositionWriter) {
        let entries = self.entries
        for view in views {
            view.render(entries: entries, into: &writer)
        }
    }
}

extension SeriesView {
    /// Sums each series as its base plus its members' counters (one pass over
    /// the entries, indexed by slot), then writes the own series and the overflow series.
    func render(entries: [RegistryEntry], into writer: inout ExpositionWriter) {
        var sent = baseSent
        var received = baseReceived
        let slots = slotOfEntry
        for index in entries.indices {
            let slot = Int(slots[index])
            sent[slot] &+= entries[index].sent
            received[slot] &+= entries[index].received
        }
        if let overflow = overflowSlot.map(Int.init) {
            for slot in state.indices where state[slot] == .overflowed {
                sent[overflow] &+= sent[slot]
                received[overflow] &+= received[slot]
            }
        }

        // 20 digits, a space and a newline, plus the name, per sample.
        let sampleBytes = renderedSeriesCount * (max(sentName.count, receivedName.count) + 22) + labelTextBytes
        // Room for the self-metrics too, so the buffer is allocated once.
        writer.bytes.reserveCapacity(writer.bytes.count + 2 * sampleBytes + 8192)

        writeFamily(name: sentName, help: ConnectionRegistry.sentHelp, sums: sent, into: &writer)
        writeFamily(name: receivedName, help: ConnectionRegistry.receivedHelp, sums: received, into: &writer)
    }

    private func writeFamily(name: [UInt8], help: String, sums: [UInt64], into writer: inout ExpositionWriter) {
        guard renderedSeriesCount > 0 else { return }
        writer.family(name: String(decoding: name, as: UTF8.self), help: help, type: .counter)
        let labelTexts = self.labelTexts
        for slot in state.indices where state[slot] == .own {
            writer.sample(nameBytes: name, preformattedLabels: labelTexts.text(of: slot), value: sums[slot])
        }
        if let overflow = overflowSlot.map(Int.init) {
            writer.sample(nameBytes: name, preformattedLabels: labelTexts.text(of: overflow), value: sums[overflow])
        }
    }
}
