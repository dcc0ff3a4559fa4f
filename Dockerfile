# syntax=docker/dockerfile:1
#
# One image for every `tb` program: `serve` in each SERVER_TYPE (BeastMain, BeastMirror, BeastLRS,
# BeastWebhook), `sync` (the nightly task), `migrate`, `queued-writer`, `keys`. The command picks:
#   docker run IMAGE                      → tb serve (SERVER_TYPE, default ALL)
#   docker run IMAGE sync --json          → tb sync
# Not built where it was written (no Docker engine there): scripts/dockerfile-steps.sh runs these
# same steps in a clean directory and starts the result; docs/deploying.md has its output.
# The script reads this file, so keep RUN commands relative to WORKDIR (it maps WORKDIR and COPY
# paths, not paths inside shell commands).

# The Node version package.json pins (devDependency `node`); test/dockerfile.test.ts keeps them equal.
ARG NODE_VERSION=24.21.0

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the `node` devDependency would download a second Node binary (the image has
# it), and `prepare` would compile before the sources are copied; the build runs below instead.
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM node:${NODE_VERSION}-bookworm-slim AS runtime
# NODE_OPTIONS=--enable-source-maps is left to the operator (the .map files are in dist/src): it
# makes every read of an Error's stack go through the source maps, on whatever path formats one.
ENV NODE_ENV=production \
    DATA_DIR=/app/data
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only; no install script is needed by any of them, and `prepare` (tsc)
# cannot run without the dev dependencies.
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --ignore-scripts
COPY --from=build /app/dist/src ./dist/src
COPY scripts/healthcheck.mjs ./scripts/healthcheck.mjs
# DATA_DIR (usage spool, generated admin token when none is configured) must be writable by the
# runtime user; 1000:1000 is the base image's `node` user.
RUN mkdir -p data && chown 1000:1000 data
USER node
# LPO HTTP, LPO UDP, LRS HTTP, LRS UDP, Prometheus /metrics (each SERVER_TYPE listens on its own subset).
EXPOSE 8080/tcp 2679/udp 9090/tcp 2680/udp 9464/tcp
# What to probe depends on the command and SERVER_TYPE (scripts/healthcheck.mjs); ECS ignores this
# and uses each task definition's healthCheck, which runs the same script.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["node", "scripts/healthcheck.mjs"]
# node is PID 1: the CLI handles SIGTERM itself (drain, flush usage rows, exit 0 within
# SHUTDOWN_TIMEOUT_MS), and reaps the child processes it forks.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/src/programs/cli.js"]
CMD ["serve"]
