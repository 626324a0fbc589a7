import { build } from './specs.fixtures';

describe('headlessService', () => {
  test('the headless Service publishes not-ready nodes on rpc 7001 and admin 7101', () => {
    const svc = build().headlessService;
    expect(svc.spec).toMatchObject({
      clusterIP: 'None',
      publishNotReadyAddresses: true,
      ports: [
        { name: 'rpc', port: 7001, targetPort: 'rpc', protocol: 'TCP' },
        { name: 'admin', port: 7101, targetPort: 'admin', protocol: 'TCP' },
      ],
    });
  });
});
