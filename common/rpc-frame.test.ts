import fc from 'fast-check';
import { CorruptDataError } from './errors';
import { encodeFrame, FrameDecoder } from './rpc-frame';

describe('rpc framing', () => {
  it('decodes messages however the byte stream is split', () => {
    const arbMsg = fc.record({
      id: fc.nat(),
      k: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
      s: fc.string(),
    });
    fc.assert(
      fc.property(
        fc.array(arbMsg, { minLength: 1, maxLength: 20 }),
        fc.array(fc.nat({ max: 50 }), { maxLength: 30 }),
        (msgs, cuts) => {
          const stream = Buffer.concat(msgs.map(encodeFrame));
          const decoder = new FrameDecoder();
          const out: unknown[] = [];
          let offset = 0;
          for (const c of cuts) {
            const end = Math.min(stream.length, offset + c);
            out.push(...decoder.push(stream.subarray(offset, end)));
            offset = end;
          }
          out.push(...decoder.push(stream.subarray(offset)));
          expect(out).toEqual(msgs);
        },
      ),
      { seed: 11, numRuns: 300 },
    );
  });

  it('joins a large frame that arrives in many pieces, beside small frames in the same pieces', () => {
    const big = { id: 1, v: Buffer.alloc(64 * 1024, 7) };
    const small = { id: 2, v: Buffer.from('x') };
    const stream = Buffer.concat([
      encodeFrame(small),
      encodeFrame(big),
      encodeFrame(small),
      encodeFrame(big),
    ]);
    for (const piece of [3, 1000, 4096, 65536]) {
      const decoder = new FrameDecoder();
      const out: unknown[] = [];
      for (let o = 0; o < stream.length; o += piece) out.push(...decoder.push(stream.subarray(o, o + piece)));
      expect(out).toEqual([small, big, small, big]);
    }
  });

  it('refuses a frame longer than the limit before buffering it', () => {
    const d = new FrameDecoder(1024);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(1025);
    expect(() => d.push(header)).toThrow(CorruptDataError);
  });

  it('holds only the first frame to the tighter first-frame limit', () => {
    const big = { pad: 'x'.repeat(200) };
    const first = new FrameDecoder(1024, 64);
    expect(() => first.push(encodeFrame(big))).toThrow(/first frame length/);
    const later = new FrameDecoder(1024, 64);
    expect(later.push(Buffer.concat([encodeFrame({ auth: 't' }), encodeFrame(big)]))).toEqual([
      { auth: 't' },
      big,
    ]);
  });

  it('refuses a frame whose body is not msgpack', () => {
    const d = new FrameDecoder();
    // a bin8 header announcing 5 bytes, followed by one: truncated inside the frame
    const bad = Buffer.from([0, 0, 0, 3, 0xc4, 5, 1]);
    expect(() => d.push(bad)).toThrow(CorruptDataError);
  });
});
