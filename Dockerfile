# syntax=docker/dockerfile:1
# One image for the icmpwatch agent, collector and CLI: ENTRYPOINT is the CLI, so
#   docker run IMAGE agent ...     docker run IMAGE collector --listen :4245 ...
#   docker run IMAGE observe --server HOST:PORT --follow
# The Helm chart (charts/icmpwatch) passes `agent ...` / `collector ...` as args.
#
#   docker build -t icmpwatch:dev .
#
# amd64 only for now: the Makefile compiles the BPF object with -D__TARGET_ARCH_x86.

ARG NODE_MAJOR=24

# ---- build: the same `make build` a developer runs --------------------------------------------
FROM node:${NODE_MAJOR}-bookworm AS build
# The Makefile's DEB_PKGS (clang, llvm, libbpf-dev, bpftool, ...), installed here so that
# `make deps` finds them all and installs nothing.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      make clang llvm libbpf-dev libbpf1 bpftool iproute2 iputils-ping python3 openssl curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# npm packages first (cached while package*.json are unchanged): the command `make deps` runs.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY Makefile tsconfig.json tsconfig.test.json ./
COPY bin ./bin
COPY bpf ./bpf
COPY proto ./proto
COPY src ./src
# `make build` also type-checks the tests (tsc -p tsconfig.test.json).
COPY test ./test
# BTF / vmlinux.h: `make build` generates build/vmlinux.h from /sys/kernel/btf/vmlinux, which in a
# `docker build` is the BUILD MACHINE's kernel, not the nodes'. That is fine: the object is CO-RE
# (compiled against those type definitions, relocated by libbpf against each node's own BTF when
# the agent loads it). The build machine needs a kernel with BTF (CONFIG_DEBUG_INFO_BTF=y, which
# every mainstream distribution kernel and Docker Desktop's have).
RUN make build \
 && test -s build/bpf/icmpwatch.bpf.o && test -s dist/cli/main.js

# ---- production node_modules: without devDependencies (TypeScript, mocha, the npm `node` binary)
FROM build AS modules
RUN npm prune --omit=dev --no-audit --no-fund --loglevel=error

# ---- runtime --------------------------------------------------------------------------------
FROM node:${NODE_MAJOR}-bookworm-slim AS runtime
# libbpf1: loaded by the agent through koffi. iproute2: the agent asks `ip -n NAME` for the
# addresses of named network namespaces that no process holds.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libbpf1 iproute2 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The repository's layout, which the code resolves paths against: dist/ (compiled CLI),
# build/bpf/ (the BPF object, DEFAULT_OBJECT), proto/ (read by the collector's gRPC reflection),
# bin/icmpwatch (runs dist/cli/main.js on node_modules/node/bin/node, else the image's node).
COPY --from=modules /src/package.json ./package.json
COPY --from=modules /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/build/bpf ./build/bpf
COPY --from=build /src/proto ./proto
COPY --from=build /src/bin ./bin
ENV NODE_ENV=production
# The agent runs as root with its capabilities (see the chart); the collector and the CLI run as
# any user (the chart runs the collector as 65532). Everything here is read-only at run time.
ENTRYPOINT ["/app/bin/icmpwatch"]
CMD ["--help"]
