# portcullis: the two commands are `make run` and `make test`.
CARGO ?= cargo

.PHONY: all deps build pgo-profile run test lint bench bench-balance bench-tcp bench-peers bench-rate-limit bench-otlp clean fuzz

all: build

## Install what the build needs (cmake, pkg-config, OpenSSL headers) if missing.
deps:
	@scripts/deps.sh

## Release build of the gateway (fat LTO, functions in link/symbol-order.txt's order, optimised
## with the profile in link/portcullis.profdata.xz: what deployments and the benchmarks run).
## PORTCULLIS_PGO=off builds without the profile.
build: deps
	@CARGO=$(CARGO) scripts/build-release.sh

## Regenerate link/portcullis.profdata.xz and link/symbol-order.txt: an instrumented build trained
## on loopback traffic, then the release build (about 30 min; needs wrk and nginx:
## ../shared/bench/setup.sh --no-build). docs/performance.md has its gain.
pgo-profile: deps
	@scripts/pgo.sh

## Build only the gateway binary (profile `demo`: opt-level 1, no dev-dependencies, the system's
## OpenSSL instead of compiling the one pingora vendors), start 3 demo backends
## (`portcullis demo-backend`) and the gateway on conf/portcullis.yaml; Ctrl-C stops all.
run: deps
	OPENSSL_NO_VENDOR=1 $(CARGO) build --profile demo --locked --bin portcullis
	@BIN=target/demo/portcullis scripts/run-demo.sh

## The whole test suite: unit, integration (real binary, real backends on 127.0.0.1), doc tests.
test: deps
	$(CARGO) test --workspace --locked

## Formatting and lints, as CI runs them.
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Criterion benchmarks of the hot functions (strategy picks).
bench: deps
	$(CARGO) bench --locked --bench pick

## Balancing quality: each strategy beside nginx and Envoy under slow, failing and saturated
## backends, open loop (about 50 min; ARGS="--rounds 1 --scenarios 1,2" for less).
## Envoy comes from ../shared/bench/setup.sh --with-gateways; a missing peer is left out.
bench-balance: build
	$(CARGO) bench --locked --bench balance -- $(ARGS)

## TCP proxying beside HAProxy mode tcp and nginx stream: 1 GiB transfers, connections per
## second (needs haproxy, nginx and libnginx-mod-stream: scripts/bench-tcp-deps.sh).
bench-tcp: build
	@scripts/bench-tcp-deps.sh
	$(CARGO) bench --locked --bench tcp -- $(ARGS)

## The shared rate limit's cost per request: local against sync and exact on a loopback Redis
## (needs wrk and nginx: ../shared/bench/setup.sh --no-build; ROUNDS=3).
bench-rate-limit: build
	@scripts/bench-rate-limit.sh $(or $(ROUNDS),3)

## The cost of OTLP span export: off, 1% and 100% of the traces (needs wrk and nginx:
## ../shared/bench/setup.sh --no-build; ROUNDS=3).
bench-otlp: build
	@scripts/bench-otlp.sh $(or $(ROUNDS),3)

## End-to-end comparison against nginx and minimal Pingora (needs ../shared/bench/setup.sh).
bench-peers: build
	@scripts/bench-peers.sh

clean:
	$(CARGO) clean

## Fuzz each target for FUZZ_SECONDS (default 60) with cargo-fuzz (installed if missing).
FUZZ_SECONDS ?= 60
fuzz: deps
	@scripts/fuzz.sh $(FUZZ_SECONDS)
