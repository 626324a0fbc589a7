import type {
  ClusterInfo,
  ClusterMove,
  ClusterNode,
  IncomingMove,
  IncomingMoveState,
  NodeRepairReport,
  RebalanceMoveStatus,
  RebalanceStatus,
  RepairProgress,
  RepairReport,
  ScaleResult,
} from '../common/rest-replies';
import { KvClientError, type ErrorContext } from './client-error';
import type { BatchResult, ListedEntry, ListPage, WriteResult } from './types';

/**
 * Checks the gateway's (and the launcher's) JSON replies against their definitions in
 * common/rest-replies.ts, so a wrong URL (another service answering JSON) fails here as
 * `bad_response` rather than in a caller.
 */

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The parsers fill optional fields one by one; what they return is readonly. */
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export function writeResult(body: unknown, ctx: ErrorContext): WriteResult {
  if (!isRecord(body) || typeof body.key !== 'string' || typeof body.version !== 'string') {
    throw new KvClientError(
      'bad_response',
      'unexpected response: expected { "key": string, "version": string }',
      ctx,
    );
  }
  return { key: body.key, version: body.version };
}

/** Checks the shape, so a wrong URL (another service answering JSON) fails here rather than in a caller. */
export function parseClusterInfo(body: unknown, ctx?: ErrorContext): ClusterInfo {
  const badResponse = (what: string): KvClientError =>
    new KvClientError('bad_response', `unexpected response: ${what}`, ctx);
  const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const isStr = (v: unknown): v is string => typeof v === 'string';
  if (!isRecord(body)) throw badResponse('cluster info is not an object');
  const { cluster, epoch, partitionCount, replicationFactor, nodes, partitions, moves, rebalance } = body;
  if (!isStr(cluster) || !isInt(epoch) || !isInt(partitionCount) || !isInt(replicationFactor)) {
    throw badResponse('cluster info lacks cluster, epoch, partitionCount or replicationFactor');
  }
  if (!Array.isArray(nodes) || !Array.isArray(partitions) || !Array.isArray(moves ?? [])) {
    throw badResponse('cluster info lacks nodes or partitions');
  }
  const cleanNodes = nodes.map((n: unknown): ClusterNode => {
    if (!isRecord(n) || !isStr(n.id) || !isStr(n.address) || !isInt(n.partitions)) {
      throw badResponse('malformed node in cluster info');
    }
    if (n.status !== 'up' && n.status !== 'down' && n.status !== 'unknown')
      throw badResponse(`node ${n.id} has status ${String(n.status)}`);
    const node: Mutable<ClusterNode> = {
      id: n.id,
      address: n.address,
      status: n.status,
      partitions: n.partitions,
    };
    if (isStr(n.zone)) node.zone = n.zone;
    return node;
  });
  const cleanPartitions = partitions.map((owners: unknown): string[] => {
    if (!Array.isArray(owners) || !owners.every(isStr))
      throw badResponse('malformed partition in cluster info');
    return [...owners];
  });
  const cleanMoves = ((moves ?? []) as unknown[]).map((m: unknown): ClusterMove => {
    if (!isRecord(m) || !isInt(m.partition) || !isStr(m.from) || !isStr(m.to)) {
      throw badResponse('malformed move in cluster info');
    }
    return { partition: m.partition, from: m.from, to: m.to };
  });
  const info: Mutable<ClusterInfo> = {
    cluster,
    epoch,
    partitionCount,
    replicationFactor,
    nodes: cleanNodes,
    partitions: cleanPartitions,
    moves: cleanMoves,
  };
  // null or absent: no rebalance (gateways older than the field send none).
  if (rebalance !== undefined && rebalance !== null) {
    if (
      !isRecord(rebalance) ||
      !Array.isArray(rebalance.targetNodes) ||
      !rebalance.targetNodes.every(isStr) ||
      !isInt(rebalance.movesTotal) ||
      !isInt(rebalance.startedAt)
    ) {
      throw badResponse('malformed rebalance in cluster info');
    }
    info.rebalance = {
      targetNodes: [...rebalance.targetNodes],
      movesTotal: rebalance.movesTotal,
      startedAt: rebalance.startedAt,
    };
  }
  return info;
}

const MOVE_STATES: readonly string[] = ['streaming', 'syncing', 'ready'];

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** A node's incoming moves; undefined when malformed. */
function parseIncoming(v: unknown): IncomingMove[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: IncomingMove[] = [];
  for (const m of v) {
    if (
      !isRecord(m) ||
      !isCount(m.partition) ||
      typeof m.from !== 'string' ||
      typeof m.state !== 'string' ||
      !MOVE_STATES.includes(m.state) ||
      !isCount(m.keys) ||
      !isCount(m.bytes)
    ) {
      return undefined;
    }
    const move: Mutable<IncomingMove> = {
      partition: m.partition,
      from: m.from,
      state: m.state as IncomingMoveState,
      keys: m.keys,
      bytes: m.bytes,
    };
    if (typeof m.error === 'string') move.error = m.error;
    out.push(move);
  }
  return out;
}

/** Checks the shape of a rebalance status, so a wrong URL (the gateway's, say) fails here. */
export function parseRebalanceStatus(body: unknown, ctx?: ErrorContext): RebalanceStatus {
  const bad = (what: string): KvClientError =>
    new KvClientError('bad_response', `unexpected response: ${what}`, ctx);
  const ids = (v: unknown): v is string[] => Array.isArray(v) && v.every((id) => typeof id === 'string');
  if (
    !isRecord(body) ||
    typeof body.active !== 'boolean' ||
    !ids(body.targetNodes) ||
    !ids(body.drainingNodes) ||
    !Array.isArray(body.moves)
  ) {
    throw bad('not a rebalance status (is the URL the launcher admin URL, port + 100?)');
  }
  const counts = [
    'epoch',
    'movesTotal',
    'movesDone',
    'movesLeft',
    'keysInFlight',
    'bytesInFlight',
    'keysStreamed',
    'bytesStreamed',
  ] as const;
  const n: Record<(typeof counts)[number], number> = {
    epoch: 0,
    movesTotal: 0,
    movesDone: 0,
    movesLeft: 0,
    keysInFlight: 0,
    bytesInFlight: 0,
    keysStreamed: 0,
    bytesStreamed: 0,
  };
  for (const k of counts) {
    const v = body[k];
    if (!isCount(v)) throw bad(`rebalance status lacks ${k}`);
    n[k] = v;
  }
  const moves = body.moves.map((m: unknown): RebalanceMoveStatus => {
    if (
      !isRecord(m) ||
      !isCount(m.partition) ||
      typeof m.from !== 'string' ||
      typeof m.to !== 'string' ||
      typeof m.state !== 'string' ||
      !(m.state === 'waiting' || MOVE_STATES.includes(m.state)) ||
      !isCount(m.keys) ||
      !isCount(m.bytes)
    ) {
      throw bad('malformed move in rebalance status');
    }
    const move: Mutable<RebalanceMoveStatus> = {
      partition: m.partition,
      from: m.from,
      to: m.to,
      state: m.state as RebalanceMoveStatus['state'],
      keys: m.keys,
      bytes: m.bytes,
    };
    if (typeof m.error === 'string') move.error = m.error;
    return move;
  });
  const status: Mutable<RebalanceStatus> = {
    ...n,
    active: body.active,
    targetNodes: [...body.targetNodes],
    drainingNodes: [...body.drainingNodes],
    moves,
  };
  if (isCount(body.startedAt)) status.startedAt = body.startedAt;
  return status;
}

/** Checks the shape of a repair report, so a wrong URL fails here rather than in a caller. */
export function parseRepairReport(body: unknown, ctx?: ErrorContext): RepairReport {
  const bad = (what: string): KvClientError =>
    new KvClientError('bad_response', `unexpected response: ${what}`, ctx);
  const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;
  if (!isRecord(body) || !isNum(body.epoch) || !Array.isArray(body.nodes)) {
    throw bad('repair report lacks epoch or nodes');
  }
  const nodes = body.nodes.map((n: unknown): NodeRepairReport => {
    if (!isRecord(n) || typeof n.id !== 'string' || typeof n.address !== 'string') {
      throw bad('malformed node in repair report');
    }
    const node: Mutable<NodeRepairReport> = { id: n.id, address: n.address };
    if (typeof n.ready === 'boolean') node.ready = n.ready;
    if (isNum(n.keys)) node.keys = n.keys;
    if (isNum(n.bytes)) node.bytes = n.bytes;
    if (isNum(n.hints)) node.hints = n.hints;
    if (n.incoming !== undefined) {
      const incoming = parseIncoming(n.incoming);
      if (!incoming) throw bad(`malformed incoming moves of node ${n.id}`);
      node.incoming = incoming;
    }
    if (isCount(n.streamedKeys)) node.streamedKeys = n.streamedKeys;
    if (isCount(n.streamedBytes)) node.streamedBytes = n.streamedBytes;
    if (isRecord(n.error) && typeof n.error.code === 'string' && typeof n.error.message === 'string') {
      node.error = { code: n.error.code, message: n.error.message };
    }
    const r = n.repair;
    if (r !== undefined) {
      if (
        !isRecord(r) ||
        typeof r.running !== 'boolean' ||
        !isNum(r.partitionsTotal) ||
        !isNum(r.partitionsDone) ||
        !isNum(r.keysRepaired) ||
        !isNum(r.lastFullRepairAt)
      ) {
        throw bad(`malformed repair status of node ${n.id}`);
      }
      const progress: Mutable<RepairProgress> = {
        running: r.running,
        partitionsTotal: r.partitionsTotal,
        partitionsDone: r.partitionsDone,
        keysRepaired: r.keysRepaired,
        lastFullRepairAt: r.lastFullRepairAt,
      };
      if (isNum(r.partitionsFailed)) progress.partitionsFailed = r.partitionsFailed;
      if (typeof r.refilling === 'boolean') progress.refilling = r.refilling;
      node.repair = progress;
    }
    return node;
  });
  const report: Mutable<RepairReport> = { epoch: body.epoch, nodes };
  if (Array.isArray(body.partitions) && body.partitions.every(isNum))
    report.partitions = [...body.partitions];
  return report;
}
/** Checks the shape of a scale result: a rebalance status and the nodes started for it. */
export function parseScaleResult(body: unknown, ctx?: ErrorContext): ScaleResult {
  const status = parseRebalanceStatus(body, ctx);
  const added = isRecord(body) ? body.addedNodes : undefined;
  if (!Array.isArray(added) || !added.every((id) => typeof id === 'string')) {
    throw new KvClientError('bad_response', 'unexpected response: scale result lacks addedNodes', ctx);
  }
  return { ...status, addedNodes: [...added] };
}

/** `POST /v1/batch`: one result per operation sent, each checked, values decoded from base64. */
export function parseBatchReply(body: unknown, sent: number, ctx: ErrorContext): BatchResult[] {
  const bad = (what: string): KvClientError =>
    new KvClientError('bad_response', `unexpected batch response: ${what}`, ctx);
  if (!isRecord(body) || !Array.isArray(body.results)) throw bad('expected { "results": [...] }');
  if (body.results.length !== sent) throw bad(`${body.results.length} results for ${sent} operations`);
  return body.results.map((r: unknown, i): BatchResult => {
    if (!isRecord(r) || typeof r.status !== 'number') throw bad(`results[${i}] has no status`);
    const out: Mutable<BatchResult> = { status: r.status };
    for (const f of ['key', 'version', 'contentType'] as const) {
      const v = r[f];
      if (v !== undefined && typeof v !== 'string') throw bad(`results[${i}].${f} is not a string`);
      if (typeof v === 'string') out[f] = v;
    }
    if (r.value !== undefined) {
      if (typeof r.value !== 'string') throw bad(`results[${i}].value is not base64`);
      out.value = Buffer.from(r.value, 'base64');
    }
    if (r.error !== undefined) {
      const e = r.error;
      if (!isRecord(e) || typeof e.code !== 'string' || typeof e.message !== 'string')
        throw bad(`results[${i}].error is not { code, message }`);
      out.error = { code: e.code, message: e.message };
    }
    return out;
  });
}

/** `GET /v1/kv`: a page of a listing, each entry checked, values decoded from base64. */
export function parseListReply(body: unknown, ctx: ErrorContext): ListPage {
  const bad = (what: string): KvClientError =>
    new KvClientError('bad_response', `unexpected listing response: ${what}`, ctx);
  if (!isRecord(body) || !Array.isArray(body.items)) throw bad('expected { "items": [...] }');
  if (body.cursor !== undefined && typeof body.cursor !== 'string') throw bad('cursor is not a string');
  const entries = body.items.map((r: unknown, i): ListedEntry => {
    if (!isRecord(r) || typeof r.key !== 'string' || typeof r.version !== 'string') {
      throw bad(`items[${i}] lacks key or version`);
    }
    const out: Mutable<ListedEntry> = { key: r.key, version: r.version };
    if (r.value !== undefined) {
      if (typeof r.value !== 'string') throw bad(`items[${i}].value is not base64`);
      out.value = Buffer.from(r.value, 'base64');
    }
    if (r.contentType !== undefined) {
      if (typeof r.contentType !== 'string') throw bad(`items[${i}].contentType is not a string`);
      out.contentType = r.contentType;
    }
    return out;
  });
  return body.cursor === undefined ? { entries } : { entries, cursor: body.cursor };
}
