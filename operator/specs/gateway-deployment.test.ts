import { build } from './specs.fixtures';
import { parseKVClusterSpec } from '../../crds/kvcluster-spec';

describe('gatewayDeployment and gatewayService', () => {
  test('the gateway: replicas, command line, probes on 8080, and its Service from spec.gateway', () => {
    const r = build({ gateway: { replicas: 4, port: 8443, serviceType: 'LoadBalancer' } });
    expect(r.gatewayDeployment.spec?.replicas).toBe(4);
    const [c] = r.gatewayDeployment.spec?.template.spec?.containers ?? [];
    expect(c.command).toEqual([
      'node',
      'dist/gateway/main.js',
      '--id=$(POD_NAME)',
      '--cluster=demo',
      '--host=0.0.0.0',
      '--port=8080',
      '--kube-namespace=prod',
      '--internal-token-file=/etc/kvstore/internal/token',
      '--auth-file=/etc/kvstore/api-keys/keys.json',
      '--read-hedge-ms=50',
      // Keeps serving while the Service drops a terminating pod (rollouts, evictions).
      '--shutdown-delay-ms=5000',
    ]);
    expect(c.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'http', scheme: 'HTTP' });
    expect(c.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'http', scheme: 'HTTP' });
    // Without spec.auth.secretRef the gateway reads the key file the operator generates.
    expect(r.gatewayDeployment.spec?.template.spec?.volumes).toContainEqual({
      name: 'api-keys',
      secret: { secretName: 'demo-api-keys', defaultMode: 0o440 },
    });
    expect(c.securityContext?.readOnlyRootFilesystem).toBe(true);
    expect(r.gatewayService.spec).toMatchObject({
      type: 'LoadBalancer',
      ports: [{ name: 'http', port: 8443, targetPort: 'http', protocol: 'TCP' }],
      selector: { 'app.kubernetes.io/component': 'gateway', 'app.kubernetes.io/instance': 'demo' },
    });
  });

  test('gateway security from the spec: API keys from a Secret or explicitly off, TLS, rate limits', () => {
    const gateway = (spec: Record<string, unknown>) => {
      const d = build(spec).gatewayDeployment.spec?.template.spec;
      const [c] = d?.containers ?? [];
      return { args: c.command ?? [], c, volumes: d?.volumes ?? [] };
    };
    const own = gateway({ auth: { secretRef: { name: 'team-keys' } } });
    expect(own.args).toContain('--auth-file=/etc/kvstore/api-keys/keys.json');
    expect(own.volumes).toContainEqual({
      name: 'api-keys',
      secret: { secretName: 'team-keys', defaultMode: 0o440 },
    });

    const off = gateway({ auth: { disabled: true } });
    expect(off.args).toContain('--no-auth');
    expect(off.args.some((a) => a.startsWith('--auth-file'))).toBe(false);
    expect(off.volumes.some((v) => v.name === 'api-keys')).toBe(false);

    const tls = gateway({ gateway: { tls: { secretRef: { name: 'demo-tls' } } } });
    expect(tls.args).toEqual(
      expect.arrayContaining(['--tls-cert=/etc/kvstore/tls/tls.crt', '--tls-key=/etc/kvstore/tls/tls.key']),
    );
    expect(tls.volumes).toContainEqual({
      name: 'tls',
      secret: { secretName: 'demo-tls', defaultMode: 0o440 },
    });
    expect(tls.c.readinessProbe?.httpGet?.scheme).toBe('HTTPS');
    expect(tls.c.livenessProbe?.httpGet?.scheme).toBe('HTTPS');

    const limited = gateway({ gateway: { rateLimit: { perKey: 100, perAddress: 20, windowSeconds: 10 } } });
    expect(limited.args).toEqual(
      expect.arrayContaining([
        '--rate-limit-per-key=100',
        '--rate-limit-per-address=20',
        '--rate-limit-window-s=10',
      ]),
    );
    expect(gateway({}).args.some((a) => a.startsWith('--rate-limit'))).toBe(false);

    // The hedge delay is always passed, so the spec's default is the one in force, not the binary's.
    expect(gateway({}).args).toContain('--read-hedge-ms=50');
    expect(gateway({ gateway: { readHedgeMs: 0 } }).args).toContain('--read-hedge-ms=0');
    expect(() => parseKVClusterSpec({ gateway: { readHedgeMs: -1 } })).toThrow(/readHedgeMs/);
  });

  test('auth.secretRef and auth.disabled together are refused', () => {
    expect(() => parseKVClusterSpec({ auth: { secretRef: { name: 'k' }, disabled: true } })).toThrow(
      /mutually exclusive/,
    );
  });
});
