import { requiredAcks } from './consistency';

describe('requiredAcks', () => {
  it('follows the consistency level', () => {
    expect([1, 2, 3, 4, 5].map((rf) => requiredAcks('quorum', rf))).toEqual([1, 2, 2, 3, 3]);
    expect(requiredAcks('one', 3)).toBe(1);
    expect(requiredAcks('all', 3)).toBe(3);
    // W + R > RF for quorum/quorum at every RF: the promise the README makes
    for (let rf = 1; rf <= 9; rf++) expect(2 * requiredAcks('quorum', rf)).toBeGreaterThan(rf);
  });
});
