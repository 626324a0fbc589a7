# Certificate helpers for start.sh and node.sh (sourced, not run): one CA in $certs signs
# every serving and client certificate, as in a kubeadm cluster.

# openssl chats on stderr when all is well: show its output only when it fails.
ossl() {
  local out
  out="$(openssl "$@" 2>&1)" || {
    echo "openssl $1 failed: $out" >&2
    return 1
  }
}
gen_key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
# sign NAME SUBJECT EXTENSIONS [CA_NAME]: $certs/NAME.{key,crt}, signed by $certs/CA_NAME (default ca).
sign() {
  local ca="${4:-ca}"
  gen_key "$certs/$1.key"
  ossl req -new -key "$certs/$1.key" -subj "$2" -out "$certs/$1.csr"
  printf '%b\n' "$3" >"$certs/$1.ext"
  ossl x509 -req -in "$certs/$1.csr" -CA "$certs/$ca.crt" -CAkey "$certs/$ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$certs/$1.ext" -out "$certs/$1.crt"
  rm -f "$certs/$1.csr"
  chmod 600 "$certs/$1.key"
}
