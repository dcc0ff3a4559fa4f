#!/bin/sh
# The Dockerfile's steps without a Docker engine: see scripts/dockerfile-steps.ts. Needs root (it
# switches to the image's user with setpriv and starts the program as PID 1 with unshare), the
# npm registry or a warm npm cache, and the repository's node_modules (for the pinned Node 24).
# `--keep` leaves the work directory under /tmp for inspection.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
node="$repo/node_modules/node/bin/node"
[ -x "$node" ] || { echo "run npm ci first: $node (the pinned Node) is missing" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root: setpriv (the image's USER) and unshare (PID 1)" >&2; exit 2; }
exec "$node" "$repo/scripts/dockerfile-steps.ts" "$@"
