import { clientErrorResponse } from './protocol-errors';

describe('clientErrorResponse', () => {
  test.each([
    ['HPE_HEADER_OVERFLOW', 'HTTP/1.1 431 Request Header Fields Too Large'],
    ['ERR_HTTP_REQUEST_TIMEOUT', 'HTTP/1.1 408 Request Timeout'],
    ['HPE_INVALID_METHOD', 'HTTP/1.1 400 Bad Request'],
    [undefined, 'HTTP/1.1 400 Bad Request'],
  ])('%s: %s, no body, the connection closes', (code, statusLine) => {
    const raw = clientErrorResponse(code);
    expect(raw.split('\r\n')[0]).toBe(statusLine);
    expect(raw).toMatch(/\r\nContent-Length: 0\r\n/);
    expect(raw).toMatch(/\r\nConnection: close\r\n\r\n$/);
  });
});
