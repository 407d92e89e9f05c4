# icmpwatch. Everything runs as root on a Debian machine; `make deps` installs what is missing.
SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

DEB_PKGS := clang llvm libbpf-dev libbpf1 bpftool iproute2 iputils-ping python3 openssl curl
BPF_SRC := $(wildcard bpf/*.bpf.c)
BPF_OBJ := $(patsubst bpf/%.bpf.c,build/bpf/%.bpf.o,$(BPF_SRC))
PROTO := $(wildcard proto/icmpwatch/v1/*.proto)
PROTO_JS := src/common/proto/icmpwatch.js
TS_SRC := $(shell find src -name '*.ts' -not -name '*.d.ts')

.PHONY: all deps build test demo k8s-build k8s-up k8s-down bench clean

all: build

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@if [ ! -x node_modules/node/bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
	  echo "make deps: installing npm packages (npm ci; Node 24 comes from the npm registry's node package)"; \
	  npm ci --no-audit --no-fund --loglevel=error; \
	fi

build: deps $(BPF_OBJ) dist/.built

build/vmlinux.h:
	@mkdir -p build
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@

build/bpf/%.bpf.o: bpf/%.bpf.c bpf/icmpwatch.h build/vmlinux.h
	@mkdir -p build/bpf
	clang -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -Werror \
	  -Ibuild -Ibpf -I/usr/include/$(shell uname -m)-linux-gnu -c $< -o $@

$(PROTO_JS): $(PROTO)
	@mkdir -p $(dir $@)
	pbjs -t static-module -w es6 --force-number --no-beautify -p proto -o $@ $(PROTO)
	pbts -o $(PROTO_JS:.js=.d.ts) $@

dist/.built: $(PROTO_JS) $(TS_SRC) tsconfig.json package-lock.json
	tsc -p tsconfig.json
	tsc -p tsconfig.test.json
	@touch $@

test: build k8s-build
	mocha 'test/**/*.test.ts'

demo: build
	./bin/icmpwatch demo

# A real etcd and kube-apiserver, built once from the Go module proxy and cached outside the repo.
k8s-build:
	test/k8s/build.sh
	test/k8s/build-helm.sh

k8s-up:
	test/k8s/up.sh

k8s-down:
	test/k8s/down.sh

clean:
	rm -rf build dist $(PROTO_JS) $(PROTO_JS:.js=.d.ts)

# Benchmarks (results in BENCHMARKS.md); never part of `make test`. Root: capture beside a C floor
# and bpftrace, the pipeline to subscribers and collector ingest, enrichment at 1k-50k pods.
# `make bench QUICK=1` prints the key figures and leaves BENCHMARKS.md alone.
bench: build k8s-build
	@command -v bpftrace >/dev/null || { echo "make bench: installing Debian package: bpftrace"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bpftrace >/dev/null; }
	QUICK=$(QUICK) tsx test/bench/run.ts
	QUICK=$(QUICK) tsx test/bench/pipeline.ts
	QUICK=$(QUICK) tsx test/bench/enrichment.ts
