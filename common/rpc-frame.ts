import type { Socket } from 'node:net';
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

/** Joined into one buffer below this many bytes; larger batches go out as they are (no copy). */
const JOIN_BELOW_BYTES = 64 * 1024;

/**
 * Writes the frames of one event-loop turn with one syscall: small ones joined into one buffer,
 * large ones (values of tens of KiB) corked and written as they are, so their bytes are not copied
 * once more on the way out.
 */
export function writeFrames(socket: Socket, frames: readonly Buffer[]): void {
  if (frames.length === 1) {
    socket.write(frames[0]);
    return;
  }
  let bytes = 0;
  for (const f of frames) bytes += f.length;
  if (bytes < JOIN_BELOW_BYTES) {
    socket.write(Buffer.concat(frames, bytes));
    return;
  }
  socket.cork();
  for (const f of frames) socket.write(f);
  socket.uncork();
}

/**
 * Incremental decoder for a byte stream: push chunks as they arrive, get whole messages out.
 * Chunks are kept as they came and joined only for a frame that spans several (a 64 KiB value
 * arrives in pieces): joining everything buffered on each chunk made large frames cost
 * quadratic copying.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** bytes of the frame at the head of the buffer (prefix included), once its prefix is read */
  private frameBytes: number | undefined;

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
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const out: unknown[] = [];
    for (;;) {
      if (this.frameBytes === undefined) {
        if (this.buffered < 4) break;
        const len = this.take(4, false).readUInt32BE(0);
        const limit = this.firstFrameMaxBytes ?? this.maxFrameBytes;
        if (len > limit) {
          throw new CorruptDataError(
            `${this.firstFrameMaxBytes === undefined ? 'frame' : 'first frame'} length ${len} exceeds ${limit}`,
          );
        }
        this.frameBytes = 4 + len;
      }
      if (this.buffered < this.frameBytes) break;
      const body = this.take(this.frameBytes, true).subarray(4);
      this.frameBytes = undefined;
      this.firstFrameMaxBytes = undefined;
      try {
        out.push(packr.unpack(body));
      } catch (err) {
        throw new CorruptDataError(`undecodable frame: ${String(err)}`);
      }
    }
    return out;
  }

  /** The first `n` buffered bytes, joined only if they span chunks; `consume` removes them. */
  private take(n: number, consume: boolean): Buffer {
    const head = this.chunks[0];
    let bytes: Buffer;
    if (head.length >= n) {
      bytes = head.subarray(0, n);
      if (consume) {
        if (head.length === n) this.chunks.shift();
        else this.chunks[0] = head.subarray(n);
      }
    } else {
      bytes = Buffer.allocUnsafe(n);
      let filled = 0;
      let i = 0;
      while (filled < n) {
        const c = this.chunks[i];
        const part = Math.min(c.length, n - filled);
        c.copy(bytes, filled, 0, part);
        filled += part;
        if (part < c.length) {
          if (consume) this.chunks[i] = c.subarray(part);
          break;
        }
        i++;
      }
      // chunks[0..i) are used up; chunks[i] (if any) keeps what was left of it
      if (consume) this.chunks.splice(0, i);
    }
    if (consume) this.buffered -= n;
    return bytes;
  }
}
