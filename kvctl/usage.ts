import { DEFAULT_GATEWAY_URL } from './options';

/**
 * kvctl's help texts: `kvctl --help` (USAGE) and those of put, get, delete and cluster; the
 * other commands keep theirs beside their code. The exit statuses are documented once, here.
 */

/** What every exit status means; kvctl --help ends with it and main.test.ts checks each one. */
export const EXIT_STATUSES = `exit status:
  0  ok
  1  a "no" answer: get: the key is absent; status: the cluster is degraded; verify: violations found
  2  usage error: a bad command, option or value (nothing was sent); scale: a target the launcher refuses
  3  failure: the server could not be reached, answered an error, or is not kvstore (a wrong --url)`;

export const USAGE = `usage: kvctl [--url URL] [--consistency one|quorum|all] [--token TOKEN] [--ca FILE] [-o json|table]
             <command> [args]

commands:
  put <key> <value> [--ttl SECONDS]  store a value ('-' reads it from stdin as bytes); prints the version
  get <key>                          write the value's bytes to stdout; exit 1 when the key is absent
  delete <key>                       delete a key (absent is fine); prints the version
  batch [FILE]                       run get/put/delete operations given as JSON lines, 1000 a request
  ls [PREFIX] [--start A --end B]    list keys in byte order, a page at a time; --values, --limit N
  cluster                            show the partition map: nodes, replicas, moves in progress
  status [--watch]                   nodes with state, keys, bytes; under-replicated partitions; moves;
                                     exit 1 when the cluster is degraded
  verify [--duration 60s] [--clients N] [--keys K]  run writers and readers, check no acknowledged write
                                     is lost; exit 1 when it finds violations
  repair [--partition P] [--watch]   start anti-entropy on every node; --watch follows it to the end
  scale --nodes N [--wait]           grow or shrink the npm start cluster to N nodes, moving partitions live
                                     (talks to the launcher: --admin-url, else --url's port + 100)
  auth create-key --id ID --role R [--prefix P]  make an API key: prints its token once and the
                                     entry for the gateway's key file
  completion bash|zsh                print a shell completion script
  help [command]                     show this help, or a command's

options (before or after the command):
  --url URL            gateway URL (default: $KVSTORE_URL, else ${DEFAULT_GATEWAY_URL})
  --consistency LEVEL  one, quorum or all (default: the gateway's, quorum)
  --token TOKEN        bearer token (default: $KVSTORE_TOKEN)
  --ca FILE            PEM CA certificate(s) to trust for an https URL, instead of the system's
                       (default: $KVSTORE_CA)
  -o, --output FORMAT  table (for people, the default) or json (one JSON document; JSON lines for
                       status --watch, repair --watch and scale --wait: one document a refresh)
  -V, --version        print kvctl's version
  -h, --help           show this help; kvctl <command> --help shows a command's

Durations are a number and a unit: 500ms, 2s, 1.5s, 1m, 1h. Colours and in-place redraws only on a
terminal, never when NO_COLOR is set. A key or value that starts with '-' goes after '--', e.g.
kvctl put -- -key -value

${EXIT_STATUSES}`;

export const PUT_USAGE = `usage: kvctl put [--url URL] [--consistency L] [--token T] [--ca FILE] [-o json|table]
                 <key> <value> [--ttl SECONDS] [--content-type TYPE]

Stores <value> under <key> and prints the version the gateway gave it. A value of '-' is read from
stdin, as bytes (echo -n data | kvctl put k -). With -o json: {"key", "version"}.

options:
  --ttl SECONDS          the value expires after SECONDS
  --content-type TYPE    kept with the value and given back by GET (default application/octet-stream)

${EXIT_STATUSES}`;

export const GET_USAGE = `usage: kvctl get [--url URL] [--consistency L] [--token T] [--ca FILE] [-o json|table] <key>

Writes the value's bytes to stdout, exactly (a newline is added only on a terminal). With -o json:
{"key", "version", "value"}, or "valueBase64" for a value that is not UTF-8 text.

${EXIT_STATUSES}`;

export const BATCH_USAGE = `usage: kvctl batch [--url URL] [--consistency L] [--token T] [--ca FILE] [-o json|table] [FILE]

Runs the operations in FILE (or stdin: '-' or none), one JSON object a line:
  {"op":"put","key":"a","value":"text","ttl":60,"contentType":"text/plain"}
  {"op":"put","key":"b","valueBase64":"AAEC"}
  {"op":"get","key":"a"}
  {"op":"delete","key":"b"}
1000 to a request (POST /v1/batch; not atomic). Prints one result a line, in order: index, status,
key and the value (gets), version (writes) or error. With -o json: one JSON object a line
({"index", "status", "key", "version", "valueBase64", "contentType", "error"}). Exit 3 when any
operation failed (a get of an absent key is not a failure).

${EXIT_STATUSES}`;

export const LS_USAGE = `usage: kvctl ls [--url URL] [--consistency L] [--token T] [--ca FILE] [-o json|table]
                [PREFIX] [--start KEY] [--end KEY] [--limit N] [--values]

Lists the keys that start with PREFIX (all keys when none), or those from --start (inclusive) to
--end (exclusive), in byte order, one a line, fetched 1000 to a request (GET /v1/kv) as they are
printed. Deleted and expired keys are not listed. The listing is not a snapshot: a key unchanged
throughout is listed exactly once; one written or deleted meanwhile may or may not be, never twice.
With --values: key, a tab, and the value as a JSON string (or base64: for bytes that are not UTF-8).
With -o json: one JSON object a line ({"key", "version", "value" or "valueBase64", "contentType"}).

options:
  --start KEY   list from KEY (inclusive)
  --end KEY     list up to KEY (exclusive)
  --limit N     print at most N keys
  --values      print each value beside its key

${EXIT_STATUSES}`;

export const DELETE_USAGE = `usage: kvctl delete [--url URL] [--consistency L] [--token T] [--ca FILE] [-o json|table] <key>

Deletes <key> (an absent key is fine) and prints the version of the deletion. With -o json:
{"key", "version"}.

${EXIT_STATUSES}`;

export const CLUSTER_USAGE = `usage: kvctl cluster [--url URL] [--token T] [--ca FILE] [-o json|table]

Shows the gateway's partition map: the cluster, its epoch, every node with its status and replica
count, partitions with fewer replicas than the replication factor, moves in progress. With -o json
(or --json): GET /v1/cluster as the gateway answers it.

${EXIT_STATUSES}`;
