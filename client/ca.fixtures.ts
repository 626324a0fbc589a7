/** Certificates for the tests of the client's `ca` option and kvctl's `--ca`: never trusted by anything. */

/** A throwaway self-signed CA certificate (public half only), parsed, never trusted by anything. */
export const CA_PEM = `-----BEGIN CERTIFICATE-----
MIIBkzCCATmgAwIBAgIUTY7QTwSJR7UmZzQY97CsdcptD84wCgYIKoZIzj0EAwIw
HzEdMBsGA1UEAwwUa3ZzdG9yZSB1bml0IHRlc3QgQ0EwHhcNMjYxMTI2MDM0ODIx
WhcNMjYxMTI3MDM0ODIxWjAfMR0wGwYDVQQDDBRrdnN0b3JlIHVuaXQgdGVzdCBD
QTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABDKC1len9PQPCs7KbDZiXSSBhmk3
qlCuOrwLLey2wc1JabDtvjo+hN62Mx25TxmLKBJ8t/aP/V5jF/1TxermdjWjUzBR
MB0GA1UdDgQWBBRgImY8pbgOb5eT8JKjWoSXm+DPjjAfBgNVHSMEGDAWgBRgImY8
pbgOb5eT8JKjWoSXm+DPjjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA
MEUCIDkrghspqW8wJ3QHxE10kclD2CI5jIRFepeshF2XRALdAiEA+D4M8BGuIaJc
0ZVCYmoah81ET06YaKVd2ugKKca9/Mg=
-----END CERTIFICATE-----
`;
export const BROKEN_PEM =
  '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n';
