import fs from 'node:fs';
import type { Agent } from 'undici';

/**
 * The launcher's own requests to its processes (readiness, epochs). Those to a
 * gateway serving TLS trust exactly the certificate the launcher gave it, not
 * a CA: the launcher knows whom it started on 127.0.0.1, so a certificate
 * signed by a CA it was never told about (or issued only for the public host
 * name) must not stop it from seeing its own gateway is ready.
 */

/** The gateway's certificate and key files, as the launcher passes them with --tls-cert / --tls-key. */
export interface LocalTlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

export interface ProbeResponse {
  readonly ok: boolean;
  readonly status: number;
  json(): Promise<unknown>;
}

export type ProbeFetch = (url: string, init: { signal: AbortSignal }) => Promise<ProbeResponse>;

/**
 * fetch for the launcher's probes: http URLs through the global fetch; https URLs through
 * undici's own fetch and an Agent whose only trust anchors are the certificate file's contents.
 */
export function probeFetch(tls: LocalTlsFiles | undefined): ProbeFetch {
  if (!tls) return (url, init) => fetch(url, init);
  let agent: { pem: Buffer; agent: Agent } | undefined;
  /** the contents before the last change: the gateway serves them until its next reload poll */
  let previous: Buffer | undefined;
  const agentFor = async (): Promise<Agent> => {
    const pem = fs.readFileSync(tls.certFile);
    if (agent?.pem.equals(pem)) return agent.agent;
    const { Agent: UndiciAgent } = await import('undici');
    if (agent) {
      previous = agent.pem;
      // Only idle probe connections are left on it; whether they close cleanly changes nothing.
      agent.agent.close().catch(() => undefined);
    }
    const ca = previous ? [pem, previous] : [pem];
    agent = {
      pem,
      agent: new UndiciAgent({
        connect: {
          ca,
          // The leaf itself is the anchor, whoever signed it...
          allowPartialTrustChain: true,
          // ...and it may name only the public host, not 127.0.0.1.
          checkServerIdentity: () => undefined,
        },
      }),
    };
    return agent.agent;
  };
  return async (url, init) => {
    if (!url.startsWith('https:')) return fetch(url, init);
    const dispatcher = await agentFor();
    const { fetch: undiciFetch } = await import('undici');
    return undiciFetch(url, { ...init, dispatcher });
  };
}
