import { createLogger } from './logger';

describe('createLogger', () => {
  it('writes JSON lines with the level by name, the component and an ISO time', () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger(
      'gateway',
      { gateway: 'gw-1' },
      {
        write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>),
      },
    );
    log.info('started');
    log.warn({ peer: 'n2' }, 'slow');
    log.error('failed');
    expect(lines.map((l) => l.level)).toEqual(['info', 'warn', 'error']);
    expect(lines[1]).toMatchObject({ component: 'gateway', gateway: 'gw-1', peer: 'n2', msg: 'slow' });
    expect(lines[0].time).toEqual(expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/));
  });
});
