import { build } from './specs.fixtures';
import { resourceList } from './desired-resources';

describe('serviceMonitor', () => {
  test('a ServiceMonitor only when enabled and its CRD exists', () => {
    const enabled = { monitoring: { serviceMonitor: { enabled: true, interval: '15s' } } };
    expect(build(enabled).serviceMonitor).toBeUndefined();
    expect(build({}, { serviceMonitorAvailable: true }).serviceMonitor).toBeUndefined();
    const sm = build(enabled, { serviceMonitorAvailable: true }).serviceMonitor;
    expect(sm).toMatchObject({
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'ServiceMonitor',
      metadata: { name: 'demo', namespace: 'prod' },
      spec: {
        endpoints: [
          { port: 'admin', path: '/metrics', interval: '15s' },
          { port: 'http', path: '/metrics', interval: '15s' },
        ],
      },
    });
    expect(resourceList(build(enabled, { serviceMonitorAvailable: true })).at(-1)?.kind).toBe(
      'ServiceMonitor',
    );
  });
});
