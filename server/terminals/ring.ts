/** A byte ring keeping the last `capacity` bytes of a terminal's output (replayed on reattach). */
export class ScrollbackRing {
  private readonly buf: Buffer;
  private end = 0;
  private length = 0;

  constructor(readonly capacity: number) {
    this.buf = Buffer.allocUnsafe(capacity);
  }

  get size(): number {
    return this.length;
  }

  push(data: Uint8Array): void {
    const cap = this.capacity;
    let src = data;
    if (src.length >= cap) {
      src = src.subarray(src.length - cap);
      this.buf.set(src, 0);
      this.end = 0;
      this.length = cap;
      return;
    }
    const first = Math.min(src.length, cap - this.end);
    this.buf.set(src.subarray(0, first), this.end);
    if (first < src.length) this.buf.set(src.subarray(first), 0);
    this.end = (this.end + src.length) % cap;
    this.length = Math.min(cap, this.length + src.length);
  }

  /**
   * The kept bytes, oldest first. Leading UTF-8 continuation bytes (a character cut by the ring's
   * edge) are dropped so a replay never starts with a replacement character.
   */
  snapshot(): Buffer {
    const start = (this.end - this.length + this.capacity) % this.capacity;
    const out =
      start + this.length <= this.capacity
        ? Buffer.from(this.buf.subarray(start, start + this.length))
        : Buffer.concat([this.buf.subarray(start), this.buf.subarray(0, this.end)]);
    let skip = 0;
    while (skip < Math.min(3, out.length) && (out[skip]! & 0xc0) === 0x80) skip++;
    return skip ? out.subarray(skip) : out;
  }
}
