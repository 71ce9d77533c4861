// Handler module for the simulated fleet: answers `file.apply` like the real agent does over the
// wire (agent/files): `file.ack 0`, then takes FILE_DATA frames in order and acknowledges each one
// after "writing" it (counted, not written: the benchmark measures the server), then `file.result
// applied` once `size` bytes arrived. Used by bench/files.mjs; emits { type: 'applied' } per file.

/** @param {{ options: Record<string, unknown>, emit(event: object): void }} ctx */
export default function setup(ctx) {
  /** transferId → { agent, size, received } */
  const transfers = new Map();
  return {
    'file.apply'(agent, m) {
      transfers.set(m.transferId, { agent, size: m.size, received: 0 });
      agent.send({ type: 'file.ack', transferId: m.transferId, offset: 0 });
    },
    binary(agent, data) {
      if (data[0] !== 0x03 || data.length < 10) return;
      const offset = data.readUInt32BE(1) * 2 ** 32 + data.readUInt32BE(5);
      const idLen = data[9];
      const id = data.toString('utf8', 10, 10 + idLen);
      const t = transfers.get(id);
      if (!t || t.agent !== agent || offset !== t.received) return;
      t.received += data.length - 10 - idLen;
      agent.send({ type: 'file.ack', transferId: id, offset: t.received });
      if (t.received >= t.size) {
        transfers.delete(id);
        agent.send({ type: 'file.result', transferId: id, state: 'applied', contentChanged: true });
        ctx.emit({ type: 'applied', agent: agent.index });
      }
    },
  };
}
