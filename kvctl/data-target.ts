import { KeyValueStoreClient, type Consistency } from '../client';
import { reportFailure, type Env, type KvctlIo } from './io';
import {
  consistencyOption,
  gatewayTarget,
  jsonOutput,
  loadCaOrExit,
  type GatewayTarget,
  type GlobalValues,
} from './options';

/** put, get, delete and cluster: the gateway they talk to, and how they run a request against it. */

export interface DataTarget extends GatewayTarget {
  readonly consistency?: Consistency;
  /** -o json: print JSON rather than text */
  readonly json?: boolean;
}

export function dataTarget(values: GlobalValues, env: Env): DataTarget {
  const consistency = consistencyOption(values.consistency);
  const json = jsonOutput(values);
  return {
    ...gatewayTarget(values, env),
    ...(consistency ? { consistency } : {}),
    ...(json ? { json } : {}),
  };
}

/** Runs `request` with a client for `target`; a failure is printed and becomes the exit status. */
export async function withGatewayClient(
  target: DataTarget,
  io: KvctlIo,
  request: (client: KeyValueStoreClient) => Promise<number>,
): Promise<number> {
  const loaded = loadCaOrExit(target.caFile, 'kvctl --help', io.stderr);
  if ('exit' in loaded) return loaded.exit;
  try {
    const client = new KeyValueStoreClient({
      url: target.url,
      consistency: target.consistency,
      token: target.token,
      ca: loaded.ca,
    });
    return await request(client);
  } catch (err) {
    return reportFailure(err, io.stderr);
  }
}
