# syntax=docker/dockerfile:1
# The kvstore image: one image for the operator, the storage nodes and the gateways, holding the
# server package (packages/server) and nothing else: no bench, no kvctl, no tests, no dev tools.
#   docker build -t kvstore:0.1.0 .            (kind: kind load docker-image kvstore:0.1.0)
# BASE_IMAGE: any Node 20 on Debian bookworm (glibc) with npm and a uid 1000 user; e2e/k8s/images.sh
# passes the one it builds without a registry. KVSTORE_VERSION follows common/version.ts (a test
# checks it), and labels the image.
# Entrypoint node; the command picks the component:
#   operator  node dist/operator/main.js --leader-elect ...   (the Helm chart)
#   node      node dist/node/main.js --id ... --data-dir ...  (the operator's StatefulSet)
#   gateway   node dist/gateway/main.js ...                   (the operator's Deployment)

ARG BASE_IMAGE=node:20-bookworm-slim
ARG KVSTORE_VERSION=0.1.0

FROM ${BASE_IMAGE} AS manifests
WORKDIR /app
# The workspace manifests alone: the npm ci layers below are reused until one of them changes.
COPY package.json package-lock.json ./
COPY packages/client/package.json ./packages/client/
COPY packages/kvctl/package.json ./packages/kvctl/
COPY packages/server/package.json ./packages/server/

FROM manifests AS build
# lmdb, msgpackr and @node-rs/xxhash ship prebuilt binaries for linux x64 and arm64 (glibc): no
# compiler is needed.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY packages/server/tsconfig.json ./packages/server/
COPY common ./common
COPY node ./node
COPY gateway ./gateway
COPY operator ./operator
COPY crds ./crds
COPY client ./client
COPY local ./local
# The server package's entry points and what they import, in the repository's layout (dist/node/...).
RUN npx tsc -p packages/server/tsconfig.json

FROM manifests AS runtime-deps
# The server package's production dependencies only (no commander, no dev tools); the workspace's
# own link is dropped, the image runs from /app/dist.
RUN npm ci --omit=dev --no-audit --no-fund --workspace @kvstore/server --include-workspace-root=false \
  && rm -rf node_modules/@kvstore

# Same base as the build stages: the native modules were installed for its glibc and architecture.
FROM ${BASE_IMAGE}
ARG KVSTORE_VERSION
LABEL org.opencontainers.image.title="kvstore" \
  org.opencontainers.image.description="kvstore's servers: storage node, REST gateway, Kubernetes operator" \
  org.opencontainers.image.version="${KVSTORE_VERSION}" \
  org.opencontainers.image.licenses="Apache-2.0" \
  org.opencontainers.image.source="https://github.com/kvstore/kvstore" \
  org.opencontainers.image.url="https://github.com/kvstore/kvstore" \
  org.opencontainers.image.documentation="https://github.com/kvstore/kvstore#readme" \
  org.opencontainers.image.vendor="kvstore maintainers"
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/packages/server/package.json ./package.json
COPY --from=runtime-deps /app/node_modules ./node_modules
COPY --from=build /app/packages/server/dist ./dist
# The image's `node` user (uid 1000); the chart's pods run as 1000 with a read-only root filesystem,
# so nothing here is written at run time (data lives on the volumes the operator mounts).
USER 1000:1000
ENTRYPOINT ["node"]
CMD ["dist/operator/main.js"]
