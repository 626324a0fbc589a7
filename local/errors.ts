import { KvError } from '../common/errors';

/** Anything the launcher cannot do as asked; `code` says what (not_built, ports_busy, map_race, ...). */
export class LocalClusterError extends KvError {}
