import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import {
  CoordinationV1Api,
  CoreV1Api,
  makeInformer,
  type Informer,
  type KubeConfig,
  type ObjectCache,
  type V1Container,
  type V1EnvVar,
  type V1Pod,
  type V1PodCondition,
} from '@kubernetes/client-node';

/*
 * A test stand-in for the kubelet (and the scheduler), for this project's own pods only, against
 * the process-only control plane of e2e/k8s/control-plane.ts, which has neither.
 *
 * What it does:
 * - registers a Node object (Ready) and keeps its Lease in kube-node-lease renewed, so the node
 *   lifecycle controller does not taint it and evict the pods;
 * - watches pods labelled app.kubernetes.io/name=kvstore, binds the Pending ones to that Node
 *   (the Binding subresource, as the scheduler does);
 * - runs the first container of each bound pod as a local process: the image is taken to be this
 *   repository with `node` as entrypoint, so `node dist/...` runs process.execPath in the repo root
 *   (build first); env from the container (value and the downward API fieldRefs metadata.name,
 *   metadata.namespace, status.podIP, spec.nodeName, status.hostIP), `$(VAR)` expanded in command,
 *   args and env, plus KUBECONFIG (the test's admin kubeconfig) so `--kube-namespace` works;
 * - gives each pod its own loopback address (127.a.b.c; Linux routes all of 127.0.0.0/8 to lo) and
 *   rewrites `0.0.0.0` in the arguments to it, so pods share port numbers;
 * - stands in for volumes with a folder per pod name (`<workDir>/volumes/<ns>_<pod>/<volume>`)
 *   substituted for each volumeMount's mountPath in the arguments: a recreated pod of the same
 *   name gets its data back, as a StatefulSet's PVC gives it; a Secret volume's folder gets the
 *   Secret's keys as files when the process starts (not refreshed while it runs, unlike the kubelet);
 * - reports the pod Running with its IP, then Ready per its httpGet readiness probe, polled every
 *   ~500 ms (not the probe's own period); restarts a process that exits (restartPolicy Always);
 * - when a pod gets a deletionTimestamp (or disappears), sends SIGTERM, SIGKILL after the grace
 *   period, and deletes the pod object with grace 0, so the StatefulSet controller recreates it;
 * - writes each pod's stdout and stderr to `<workDir>/pods/<ns>_<name>.log`.
 *
 * What it does not do: images, init containers, sidecars (only the first container runs),
 * resource limits, security contexts, network isolation, DNS, liveness and startup probes,
 * volume types (every mount is a folder), exec/tcp probes, Services (the real controller manager
 * writes Endpoints; nothing routes a Service IP). It is test infrastructure, not a kubelet.
 */

export const AGENT_LABEL_SELECTOR = 'app.kubernetes.io/name=kvstore';

export interface PodAgentOptions {
  readonly kubeConfig: KubeConfig;
  /** the kubeconfig file the pods' processes get as KUBECONFIG */
  readonly kubeconfigPath: string;
  /** logs (`pods/`) and volumes (`volumes/`) go under it */
  readonly workDir: string;
  /** Node object name; default `pod-agent` */
  readonly nodeName?: string;
  /**
   * The first three octets of the pod IPs, e.g. `127.0.5` (pods get `.2` to `.254`). Different
   * agents running at the same time (parallel jest suites) need different prefixes.
   */
  readonly ipPrefix: string;
  /** where `dist/` lives; default the repository root */
  readonly repoRoot?: string;
  /** progress and errors; default none */
  readonly log?: (line: string) => void;
}

interface RunningPod {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly ip: string;
  pod: V1Pod;
  child?: ChildProcess;
  exited: boolean;
  restartCount: number;
  startedAt: string;
  ready: boolean;
  /** last status written, to write only changes */
  reported?: string;
  terminating?: Promise<void>;
  restartTimer?: NodeJS.Timeout;
  log: fs.WriteStream;
}

const POLL_MS = 500;
const LEASE_RENEW_MS = 10_000;

export class PodAgent {
  private readonly core: CoreV1Api;
  private readonly coordination: CoordinationV1Api;
  private readonly nodeName: string;
  private readonly repoRoot: string;
  private readonly log: (line: string) => void;
  private readonly pods = new Map<string, RunningPod>();
  private readonly ipOwners = new Map<string, string>();
  private informer?: Informer<V1Pod> & ObjectCache<V1Pod>;
  private ticker?: NodeJS.Timeout;
  private leaseTimer?: NodeJS.Timeout;
  private stopped = false;
  private ticking = false;
  private readonly killAll = (): void => {
    for (const p of this.pods.values()) p.child?.kill('SIGKILL');
  };

  private constructor(private readonly opts: PodAgentOptions) {
    this.core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.coordination = opts.kubeConfig.makeApiClient(CoordinationV1Api);
    this.nodeName = opts.nodeName ?? 'pod-agent';
    this.repoRoot = opts.repoRoot ?? path.resolve(__dirname, '..', '..');
    this.log = opts.log ?? (() => undefined);
  }

  /** Registers the Node, starts the pod watch and the ~500 ms status loop. */
  static async start(opts: PodAgentOptions): Promise<PodAgent> {
    const agent = new PodAgent(opts);
    fs.mkdirSync(path.join(opts.workDir, 'pods'), { recursive: true });
    fs.mkdirSync(path.join(opts.workDir, 'volumes'), { recursive: true });
    await agent.registerNode();
    await agent.startWatch();
    process.on('exit', agent.killAll);
    agent.ticker = setInterval(() => void agent.tick(), POLL_MS);
    agent.leaseTimer = setInterval(() => void agent.renewLease(), LEASE_RENEW_MS);
    return agent;
  }

  get name(): string {
    return this.nodeName;
  }

  /** The log file of a pod's process. */
  /**
   * Sends a signal to a pod's process (SIGSTOP/SIGCONT to freeze and thaw it, as a stalled
   * container would be); false when the agent runs no process for that pod.
   */
  signal(namespace: string, name: string, signal: NodeJS.Signals): boolean {
    for (const p of this.pods.values()) {
      if (p.namespace === namespace && p.name === name && p.child && !p.exited) return p.child.kill(signal);
    }
    return false;
  }

  logFile(namespace: string, name: string): string {
    return path.join(this.opts.workDir, 'pods', `${namespace}_${name}.log`);
  }

  /** Stops watching and kills every process (SIGTERM, SIGKILL after 5 s); leaves pod objects alone. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.ticker);
    clearInterval(this.leaseTimer);
    await this.informer?.stop();
    await Promise.all([...this.pods.values()].map((p) => this.killProcess(p, 5)));
    for (const p of this.pods.values()) p.log.end();
    process.off('exit', this.killAll);
  }

  private async registerNode(): Promise<void> {
    const now = new Date();
    const status = {
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          message: 'e2e pod agent',
          lastHeartbeatTime: now,
          lastTransitionTime: now,
        },
      ],
      addresses: [{ type: 'InternalIP', address: '127.0.0.1' }],
      capacity: { cpu: '64', memory: '256Gi', pods: '250' },
      allocatable: { cpu: '64', memory: '256Gi', pods: '250' },
    };
    try {
      await this.core.createNode({
        body: { metadata: { name: this.nodeName, labels: { 'kubernetes.io/hostname': this.nodeName } } },
      });
    } catch (err) {
      if (!isStatus(err, 409)) throw err;
    }
    // The controller manager edits a new Node at once (taints, annotations): retry on conflict.
    for (let attempt = 1; ; attempt++) {
      const node = await this.core.readNode({ name: this.nodeName });
      node.status = status as typeof node.status;
      try {
        await this.core.replaceNodeStatus({ name: this.nodeName, body: node });
        break;
      } catch (err) {
        if (!isStatus(err, 409) || attempt >= 20) throw err;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    await this.renewLease();
  }

  private async renewLease(): Promise<void> {
    const namespace = 'kube-node-lease';
    const renewTime = new Date() as unknown as never;
    try {
      try {
        const lease = await this.coordination.readNamespacedLease({ name: this.nodeName, namespace });
        lease.spec = { ...lease.spec, holderIdentity: this.nodeName, leaseDurationSeconds: 40, renewTime };
        await this.coordination.replaceNamespacedLease({ name: this.nodeName, namespace, body: lease });
      } catch (err) {
        if (!isStatus(err, 404)) throw err;
        await this.coordination.createNamespacedLease({
          namespace,
          body: {
            metadata: { name: this.nodeName, namespace },
            spec: { holderIdentity: this.nodeName, leaseDurationSeconds: 40, renewTime },
          },
        });
      }
    } catch (err) {
      this.log(`pod-agent: node lease: ${String(err)}`);
    }
  }

  private async startWatch(): Promise<void> {
    const informer = makeInformer<V1Pod>(
      this.opts.kubeConfig,
      '/api/v1/pods',
      () => this.core.listPodForAllNamespaces({ labelSelector: AGENT_LABEL_SELECTOR }),
      AGENT_LABEL_SELECTOR,
    );
    informer.on('add', () => void this.tick());
    informer.on('update', () => void this.tick());
    informer.on('delete', () => void this.tick());
    informer.on('error', (err) => {
      this.log(`pod-agent: pod watch failed, restarting: ${String(err)}`);
      setTimeout(() => {
        if (!this.stopped) void informer.start().catch(() => undefined);
      }, 1000);
    });
    await informer.start();
    this.informer = informer;
  }

  /** One pass over every pod: bind, start, probe, report, terminate. */
  private async tick(): Promise<void> {
    if (this.ticking || this.stopped || !this.informer) return;
    this.ticking = true;
    try {
      const seen = new Set<string>();
      for (const pod of this.informer.list()) {
        const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
        seen.add(key);
        try {
          await this.handle(key, pod);
        } catch (err) {
          this.log(`pod-agent: ${key}: ${String(err)}`);
        }
      }
      for (const [key, running] of this.pods) {
        if (!seen.has(key)) void this.terminate(running, false);
      }
    } finally {
      this.ticking = false;
    }
  }

  private async handle(key: string, pod: V1Pod): Promise<void> {
    const namespace = pod.metadata?.namespace ?? 'default';
    const name = pod.metadata?.name ?? '';
    const existing = this.pods.get(key);
    if (existing && existing.uid !== pod.metadata?.uid) {
      // The same name with a new uid: the old pod is gone (its object was deleted).
      await this.terminate(existing, false);
      return;
    }
    if (!pod.spec?.nodeName) {
      if (pod.metadata?.deletionTimestamp) return;
      await this.core.createNamespacedPodBinding({
        name,
        namespace,
        body: {
          metadata: { name, namespace },
          target: { apiVersion: 'v1', kind: 'Node', name: this.nodeName },
        },
      });
      this.log(`pod-agent: bound ${key}`);
      return;
    }
    if (pod.spec.nodeName !== this.nodeName) return;
    if (pod.metadata?.deletionTimestamp) {
      if (existing) await this.terminate(existing, true);
      else await this.deleteNow(namespace, name, pod.metadata.uid);
      return;
    }
    const running = existing ?? this.startPod(key, pod);
    running.pod = pod;
    if (running.terminating) return;
    running.ready = !running.exited && (await this.probe(running));
    await this.report(running);
  }

  private allocateIp(key: string): string {
    for (let last = 2; last <= 254; last++) {
      const ip = `${this.opts.ipPrefix}.${last}`;
      if (!this.ipOwners.has(ip)) {
        this.ipOwners.set(ip, key);
        return ip;
      }
    }
    throw new Error(`no free address left in ${this.opts.ipPrefix}.0/24`);
  }

  private startPod(key: string, pod: V1Pod): RunningPod {
    const namespace = pod.metadata?.namespace ?? 'default';
    const name = pod.metadata?.name ?? '';
    const ip = this.allocateIp(key);
    const running: RunningPod = {
      key,
      namespace,
      name,
      uid: pod.metadata?.uid ?? '',
      ip,
      pod,
      exited: true,
      restartCount: 0,
      startedAt: new Date().toISOString(),
      ready: false,
      log: fs.createWriteStream(this.logFile(namespace, name), { flags: 'a' }),
    };
    this.pods.set(key, running);
    void this.spawnWhenVolumesReady(running);
    return running;
  }

  /**
   * As the kubelet: a pod whose Secret volume names a Secret that does not exist yet stays in
   * ContainerCreating, and starts once it appears (the operator creates them in the same reconcile).
   */
  private async spawnWhenVolumesReady(running: RunningPod): Promise<void> {
    while (!running.terminating && !this.stopped) {
      try {
        await this.writeSecretVolumes(running);
        this.spawnProcess(running);
        return;
      } catch (err) {
        running.log.write(`--- pod-agent: waiting for volumes: ${String(err)}\n`);
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }

  /** Secret volumes: the Secret's keys as files in the volume's folder (refreshed at every start). */
  private async writeSecretVolumes(running: RunningPod): Promise<void> {
    const container = running.pod.spec?.containers[0];
    for (const mount of container?.volumeMounts ?? []) {
      const source = running.pod.spec?.volumes?.find((v) => v.name === mount.name)?.secret;
      if (!source?.secretName) continue;
      const secret = await this.core.readNamespacedSecret({
        namespace: running.namespace,
        name: source.secretName,
      });
      const folder = this.volumeFolder(running, mount.name);
      fs.mkdirSync(folder, { recursive: true });
      for (const [k, b64] of Object.entries(secret.data ?? {})) {
        const file = path.join(folder, k);
        fs.writeFileSync(`${file}.tmp`, Buffer.from(b64, 'base64'), { mode: source.defaultMode ?? 0o644 });
        fs.renameSync(`${file}.tmp`, file);
      }
    }
  }

  private spawnProcess(running: RunningPod): void {
    const container = running.pod.spec?.containers[0];
    if (!container) throw new Error(`${running.key} has no container`);
    const env = this.containerEnv(running, container);
    const volumes = this.volumeFolders(running, container);
    const rewrite = (arg: string): string => {
      const out = expand(arg, env).replace(/0\.0\.0\.0/g, running.ip);
      // One substitution per argument (`/data/x` or `--flag=/data/x`): a folder that itself
      // starts with another mount path (`/tmp/...`) must not be rewritten again.
      for (const [mountPath, folder] of volumes) {
        const at = new RegExp(`^((?:[^=]*=)?)${escapeRegExp(mountPath)}(?=/|$)`).exec(out);
        if (at) return at[1] + folder + out.slice(at[0].length);
      }
      return out;
    };
    const argv = [...(container.command ?? []), ...(container.args ?? [])].map(rewrite);
    if (argv[0] !== 'node')
      throw new Error(`${running.key}: only \`node ...\` containers run here, got ${argv[0]}`);
    const child = spawn(process.execPath, argv.slice(1), {
      cwd: this.repoRoot,
      env: { PATH: process.env.PATH ?? '', HOME: volumes.get('/tmp') ?? this.opts.workDir, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running.child = child;
    running.exited = false;
    running.startedAt = new Date().toISOString();
    running.log.write(
      `--- pod-agent: started ${argv.join(' ')} (ip ${running.ip}) at ${running.startedAt}\n`,
    );
    child.stdout?.pipe(running.log, { end: false });
    child.stderr?.pipe(running.log, { end: false });
    child.once('error', (err) => running.log.write(`--- pod-agent: spawn failed: ${String(err)}\n`));
    child.once('exit', (code, signal) => {
      running.exited = true;
      running.ready = false;
      running.log.write(`--- pod-agent: exited code=${code} signal=${signal}\n`);
      if (running.terminating || this.stopped) return;
      // restartPolicy Always, with a short fixed back-off.
      running.restartCount++;
      running.restartTimer = setTimeout(() => {
        if (!running.terminating && !this.stopped) void this.spawnWhenVolumesReady(running);
      }, 1000);
    });
  }

  private containerEnv(running: RunningPod, container: V1Container): Record<string, string> {
    const env: Record<string, string> = { KUBECONFIG: this.opts.kubeconfigPath };
    for (const v of container.env ?? []) env[v.name] = this.envValue(running, v, env);
    return env;
  }

  private envValue(running: RunningPod, v: V1EnvVar, env: Record<string, string>): string {
    if (v.value !== undefined) return expand(v.value, env);
    const field = v.valueFrom?.fieldRef?.fieldPath;
    switch (field) {
      case 'metadata.name':
        return running.name;
      case 'metadata.namespace':
        return running.namespace;
      case 'metadata.uid':
        return running.uid;
      case 'status.podIP':
        return running.ip;
      case 'status.hostIP':
        return '127.0.0.1';
      case 'spec.nodeName':
        return this.nodeName;
      default:
        throw new Error(`${running.key}: env ${v.name}: unsupported source ${JSON.stringify(v.valueFrom)}`);
    }
  }

  /** mountPath → a folder kept per pod name (what a PVC, or an emptyDir for this test, gives). */
  private volumeFolders(running: RunningPod, container: V1Container): Map<string, string> {
    const out = new Map<string, string>();
    for (const mount of container.volumeMounts ?? []) {
      const folder = this.volumeFolder(running, mount.name);
      fs.mkdirSync(folder, { recursive: true });
      out.set(mount.mountPath.replace(/\/+$/, ''), folder);
    }
    return out;
  }

  private volumeFolder(running: RunningPod, volume: string): string {
    return path.join(this.opts.workDir, 'volumes', `${running.namespace}_${running.name}`, volume);
  }

  /** The readiness probe (httpGet only); ready once running when the container has none. */
  private probe(running: RunningPod): Promise<boolean> {
    const container = running.pod.spec?.containers[0];
    const httpGet = container?.readinessProbe?.httpGet;
    if (!httpGet) return Promise.resolve(true);
    const port =
      typeof httpGet.port === 'number'
        ? httpGet.port
        : /^\d+$/.test(httpGet.port)
          ? Number(httpGet.port)
          : container?.ports?.find((p) => p.name === httpGet.port)?.containerPort;
    if (port === undefined) return Promise.resolve(false);
    const timeoutMs = (container?.readinessProbe?.timeoutSeconds ?? 1) * 1000;
    // The kubelet probes HTTPS without verifying the certificate.
    const get = httpGet.scheme === 'HTTPS' ? https.get : http.get;
    return new Promise((resolve) => {
      const req = get(
        {
          host: httpGet.host ?? running.ip,
          port,
          path: httpGet.path ?? '/',
          timeout: timeoutMs,
          rejectUnauthorized: false,
        },
        (res) => {
          res.resume();
          const code = res.statusCode ?? 0;
          resolve(code >= 200 && code < 400);
        },
      );
      req.once('timeout', () => req.destroy(new Error('timeout')));
      req.once('error', () => resolve(false));
    });
  }

  /** Writes the pod's status when it changed (phase Running, IP, Ready, containerStatuses). */
  private async report(running: RunningPod): Promise<void> {
    const container = running.pod.spec?.containers[0];
    const ready = running.ready;
    const fingerprint = JSON.stringify([running.ip, ready, running.restartCount, running.exited]);
    if (running.reported === fingerprint && running.pod.status?.podIP === running.ip) return;
    const now = new Date();
    const cond = (type: string, ok: boolean): V1PodCondition => ({
      type,
      status: ok ? 'True' : 'False',
      lastTransitionTime: now,
    });
    const pod = running.pod;
    pod.status = {
      ...pod.status,
      phase: 'Running',
      hostIP: '127.0.0.1',
      hostIPs: [{ ip: '127.0.0.1' }],
      podIP: running.ip,
      podIPs: [{ ip: running.ip }],
      startTime: pod.status?.startTime ?? now,
      conditions: [
        cond('PodScheduled', true),
        cond('Initialized', true),
        cond('ContainersReady', ready),
        cond('Ready', ready),
      ],
      containerStatuses: [
        {
          name: container?.name ?? 'main',
          image: container?.image ?? 'kvstore',
          imageID: '',
          ready,
          started: !running.exited,
          restartCount: running.restartCount,
          state: running.exited
            ? { waiting: { reason: 'CrashLoopBackOff' } }
            : { running: { startedAt: new Date(running.startedAt) } },
        },
      ],
    };
    await this.core.replaceNamespacedPodStatus({
      name: running.name,
      namespace: running.namespace,
      body: pod,
    });
    running.reported = fingerprint;
    this.log(`pod-agent: ${running.key} ${running.ip} ready=${ready}`);
  }

  /** Kills the process (SIGTERM, SIGKILL after the grace period); then deletes the object if asked. */
  private terminate(running: RunningPod, deleteObject: boolean): Promise<void> {
    running.terminating ??= (async () => {
      const grace =
        running.pod.metadata?.deletionGracePeriodSeconds ??
        running.pod.spec?.terminationGracePeriodSeconds ??
        30;
      clearTimeout(running.restartTimer);
      await this.killProcess(running, grace);
      running.log.end();
      if (deleteObject) await this.deleteNow(running.namespace, running.name, running.uid);
      this.pods.delete(running.key);
      this.ipOwners.delete(running.ip);
      this.log(`pod-agent: ${running.key} terminated`);
    })().catch((err: unknown) => {
      this.log(`pod-agent: terminating ${running.key}: ${String(err)}`);
      // Let the next pass try again.
      running.terminating = undefined;
    });
    return running.terminating;
  }

  private async killProcess(running: RunningPod, graceSeconds: number): Promise<void> {
    const child = running.child;
    if (!child || running.exited) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceSeconds * 1000);
    await exited;
    clearTimeout(timer);
  }

  private async deleteNow(namespace: string, name: string, uid: string | undefined): Promise<void> {
    try {
      await this.core.deleteNamespacedPod({
        name,
        namespace,
        gracePeriodSeconds: 0,
        body: { gracePeriodSeconds: 0, preconditions: uid ? { uid } : undefined },
      });
    } catch (err) {
      if (!isStatus(err, 404) && !isStatus(err, 409)) throw err;
    }
  }
}

/** Kubernetes' `$(VAR)` expansion: known variables replaced, `$$` an escaped `$`, unknown left as is. */
export function expand(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (whole, name: string | undefined) => {
    if (name === undefined) return '$';
    return env[name] ?? whole;
  });
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function isStatus(err: unknown, code: number): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}
