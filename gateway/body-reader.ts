import type { IncomingMessage } from 'node:http';
import { ApiError } from './api-error';

/**
 * The request body as one Buffer, refused with 413 past `limit` (from the
 * Content-Length before reading, or while streaming a chunked body), as
 * express.raw does; the rest of a refused body is drained so the connection
 * stays usable.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tooLarge = (): void => {
      req.removeAllListeners('data');
      req.resume();
      reject(new ApiError(413, 'payload_too_large', 'request body is larger than the limit'));
    };
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limit) {
      tooLarge();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        tooLarge();
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () =>
      resolve(
        chunks.length === 1 ? chunks[0] : chunks.length === 0 ? Buffer.alloc(0) : Buffer.concat(chunks, size),
      ),
    );
    req.once('aborted', () => reject(new ApiError(400, 'bad_request', 'request aborted')));
    req.once('error', (err) => reject(new ApiError(400, 'bad_request', err.message)));
  });
}
