import { decodeRecord, encodeRecord, type KvRecord } from './record';
import { announcedFormat, needsFormat2, replyForFormat, requestForFormat } from './record-format';

const rec = (contentType?: string): KvRecord => ({
  version: { wall: 1000, logical: 1, writer: 'g1' },
  value: Buffer.from('v'),
  tombstone: false,
  ...(contentType === undefined ? {} : { contentType }),
});
const typed = encodeRecord(rec('application/json'));
const plain = encodeRecord(rec());

describe('record formats across releases', () => {
  test('a peer that announces nothing is format 1; 2 and anything newer read content types', () => {
    expect([undefined, 1, '2', null, 0].map(announcedFormat)).toEqual([1, 1, 1, 1, 1]);
    expect([2, 3].map(announcedFormat)).toEqual([2, 2]);
  });

  test('writes and hints go to a format-1 peer without content types, and unchanged to format 2', () => {
    const write = {
      op: 'write' as const,
      items: [
        { p: 1, k: Buffer.from('a'), r: typed },
        { p: 1, k: Buffer.from('b'), r: plain },
      ],
    };
    expect(needsFormat2(write)).toBe(true);
    expect(requestForFormat(write, 2)).toBe(write);
    const old = requestForFormat(write, 1) as typeof write;
    expect(old.items.map((i) => decodeRecord(i.r))).toEqual([rec(), rec()]);
    expect(old.items[1]?.r).toBe(plain);
    const hint = { op: 'hint' as const, items: [{ t: 'n2', p: 1, k: Buffer.from('a'), r: typed }] };
    expect(decodeRecord((requestForFormat(hint, 1) as typeof hint).items[0]?.r as Buffer)).toEqual(rec());
    // Nothing to strip: the same request, and a malformed one is left for the node to refuse.
    const untyped = { op: 'write' as const, items: [{ p: 1, k: Buffer.from('b'), r: plain }] };
    expect(needsFormat2(untyped)).toBe(false);
    expect(requestForFormat(untyped, 1)).toBe(untyped);
    expect(needsFormat2({ op: 'write', items: [{}] } as unknown as typeof write)).toBe(false);
  });

  test('replies with records reach a format-1 caller without content types', () => {
    const read = replyForFormat('read', { records: [typed, null, plain] }, 1) as {
      records: (Buffer | null)[];
    };
    expect(read.records.map((r) => (r === null ? null : decodeRecord(r)))).toEqual([rec(), null, rec()]);
    for (const op of ['scan', 'bucket'] as const) {
      const reply = replyForFormat(op, { items: [{ k: Buffer.from('a'), r: typed }], more: false }, 1) as {
        items: { r: Buffer }[];
        more: boolean;
      };
      expect(decodeRecord(reply.items[0]?.r as Buffer)).toEqual(rec());
      expect(reply.more).toBe(false);
    }
    const body = { records: [typed] };
    expect(replyForFormat('read', body, 2)).toBe(body);
    const info = { nodeId: 'n1' };
    expect(replyForFormat('info', info, 1)).toBe(info);
  });
});
