# syntax=docker/dockerfile:1
# The kvstore image: one image for the operator, the storage nodes and the gateways.
#   docker build -t kvstore:0.1.0 .            (kind: kind load docker-image kvstore:0.1.0)
# BASE_IMAGE: any Node 20 on Debian bookworm (glibc) with npm and a uid 1000 user; e2e/k8s/images.sh
# passes the one it builds without a registry.
# Entrypoint node; the command picks the component:
#   operator  node dist/operator/main.js --leader-elect ...   (the Helm chart)
#   node      node dist/node/main.js --id ... --data-dir ...  (the operator's StatefulSet)
#   gateway   node dist/gateway/main.js ...                   (the operator's Deployment)

ARG BASE_IMAGE=node:20-bookworm-slim
FROM ${BASE_IMAGE} AS build
WORKDIR /app
# Dependencies first, so a source change does not reinstall them. lmdb, msgpackr and @node-rs/xxhash
# ship prebuilt binaries for linux x64 and arm64 (glibc): no compiler is needed.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY common ./common
COPY node ./node
COPY gateway ./gateway
COPY operator ./operator
COPY crds ./crds
COPY client ./client
COPY local ./local
COPY bench ./bench
RUN npm run build && npm prune --omit=dev

# Same base as the build stage: the native modules were installed for its glibc and architecture.
FROM ${BASE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The image's `node` user (uid 1000); the chart's pods run as 1000 with a read-only root filesystem,
# so nothing here is written at run time (data lives on the volumes the operator mounts).
USER 1000:1000
ENTRYPOINT ["node"]
CMD ["dist/operator/main.js"]
