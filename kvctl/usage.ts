import { DEFAULT_GATEWAY_URL } from './options';

/** kvctl's help (`kvctl --help`), which also serves put, get, delete and cluster: the README quotes it. */
export const USAGE = `usage: kvctl [--url URL] [--consistency one|quorum|all] [--token TOKEN] [--ca FILE] <command> [args]

commands:
  put <key> <value> [--ttl SECONDS]  store a value ('-' reads it from stdin as bytes); prints the version
  get <key>                          write the value's bytes to stdout; exit 1 when the key is absent
  delete <key>                       delete a key (absent is fine); prints the version
  cluster [--json]                   show the partition map: nodes, replicas, moves in progress
  status [--watch] [--json]          nodes with state, keys, bytes; under-replicated partitions; moves
                                     (kvctl status --help); exit 1 when the cluster is degraded
  verify [--duration 60s] [--clients N] [--keys K]  run writers and readers, check no acknowledged write is lost
                                     (kvctl verify --help); exit 1 when it finds violations
  repair [--partition P] [--watch]   start anti-entropy on every node; --watch follows it to the end
                                     (kvctl repair --help)
  scale --nodes N [--wait]           grow or shrink the npm start cluster to N nodes, moving partitions live
                                     (kvctl scale --help; talks to the launcher, --admin-url, default :3100)
  auth create-key --id ID --role R [--prefix P]  make an API key: prints its token once and the
                                     entry for the gateway's key file (kvctl auth --help)
  help                               show this help

options:
  --url URL            gateway URL (default: $KVSTORE_URL, else ${DEFAULT_GATEWAY_URL})
  --consistency LEVEL  one, quorum or all (default: the gateway's, quorum)
  --token TOKEN        bearer token (default: $KVSTORE_TOKEN)
  --ca FILE            PEM CA certificate(s) to trust for an https URL, instead of the system's
                       (default: $KVSTORE_CA); every command
  --ttl SECONDS        put: the value expires after SECONDS
  --json               cluster: print the JSON instead of a summary
  -h, --help           show this help

A key or value that starts with '-' goes after '--', e.g.  kvctl put -- -key -value

exit status: 0 ok, 1 key not found (get), 2 usage error, 3 server or network error`;
