import { Packr } from 'msgpackr';
import { CorruptDataError } from './errors';

/**
 * Framing of the internal protocol: a u32 big-endian length, then one msgpack
 * message. Length-prefixed frames let many requests share one TCP segment and one
 * syscall, which is how the gateway batches per node without changing the
 * message shape.
 */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

// One encoder for the process: plain maps, no record extension, so any msgpack reader can decode frames.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

export function encodeFrame(message: unknown): Buffer {
  const body = packr.pack(message);
  if (body.length > MAX_FRAME_BYTES) {
    throw new CorruptDataError(`frame of ${body.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  }
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, 4);
  return out;
}

/** Incremental decoder for a byte stream: push chunks as they arrive, get whole messages out. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /**
   * `firstFrameMaxBytes`: a tighter limit for the first frame only, so a peer that has not
   * authenticated yet (its first frame must be the small auth frame) cannot make the
   * reader buffer a huge frame.
   */
  constructor(
    private readonly maxFrameBytes = MAX_FRAME_BYTES,
    private firstFrameMaxBytes?: number,
  ) {}

  /** Returns the complete messages now available. Throws CorruptDataError on a frame that cannot be valid. */
  push(chunk: Buffer): unknown[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: unknown[] = [];
    let buf = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.buffered);
    let offset = 0;
    while (buf.length - offset >= 4) {
      const len = buf.readUInt32BE(offset);
      const limit = this.firstFrameMaxBytes ?? this.maxFrameBytes;
      if (len > limit) {
        throw new CorruptDataError(
          `${this.firstFrameMaxBytes === undefined ? 'frame' : 'first frame'} length ${len} exceeds ${limit}`,
        );
      }
      if (buf.length - offset - 4 < len) break;
      const body = buf.subarray(offset + 4, offset + 4 + len);
      try {
        out.push(packr.unpack(body));
      } catch (err) {
        throw new CorruptDataError(`undecodable frame: ${String(err)}`);
      }
      offset += 4 + len;
      this.firstFrameMaxBytes = undefined;
    }
    buf = buf.subarray(offset);
    this.chunks = buf.length ? [buf] : [];
    this.buffered = buf.length;
    return out;
  }
}
