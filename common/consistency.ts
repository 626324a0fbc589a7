/** Per-request consistency levels and what each needs: shared by the coordinator and the history checker. */
export type Consistency = 'one' | 'quorum' | 'all';
export const CONSISTENCY_LEVELS: readonly Consistency[] = ['one', 'quorum', 'all'];

/** Acknowledgements needed for a consistency level at replication factor rf (quorum of 3 is 2). */
export function requiredAcks(consistency: Consistency, rf: number): number {
  switch (consistency) {
    case 'one':
      return 1;
    case 'quorum':
      return Math.floor(rf / 2) + 1;
    case 'all':
      return rf;
  }
}
