import { FileMetadataStore } from './file-metadata-store';
import type { Logger } from './logger';
import type { MetadataStore } from './metadata-store';
import { RedisMetadataStore } from './redis-metadata-store';
import { UsageError } from './cli-options';

export interface MetadataLocation {
  readonly cluster: string;
  /** the map file of a cluster on one machine */
  readonly file?: string;
  /** Redis, the fast copy shared by gateways and nodes */
  readonly redisUrl?: string;
}

/** Picks the metadata store a process was pointed at: Redis when a URL is given, else the file. */
export function openMetadataStore(loc: MetadataLocation, log?: Logger): MetadataStore {
  if (loc.redisUrl) return new RedisMetadataStore({ url: loc.redisUrl, cluster: loc.cluster, log });
  if (loc.file) return new FileMetadataStore(loc.file, { log });
  throw new UsageError('give --redis URL or --metadata-file PATH to find the partition map');
}
