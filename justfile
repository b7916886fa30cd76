# GoMark's commands, in one place. CI runs `.ci/run`, which uses the same cargo commands.

set dotenv-load := false

# Run all of GoMark in one process (SQLite, in-process bus, HubSpot simulator, demo data).
serve:
    cargo run --release -p gomark -- serve

# The test suite, embedded mode only (nothing to install).
test:
    cargo test --workspace

# The test suite against local Postgres, NATS JetStream and Redis as well.
test-distributed:
    GOMARK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
    GOMARK_TEST_NATS_URL=nats://127.0.0.1:4222 \
    GOMARK_TEST_REDIS_URL=redis://127.0.0.1:6379 \
    cargo test --workspace

fmt:
    cargo fmt --all

lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# HubSpot's official Python (PyPI) and Node (npm) clients against hubspot-sim.
hubspot-clients:
    bash .ci/hubspot-clients/run

# buf lint and buf breaking (against main) over proto/.
buf:
    bash .ci/buf

# Python's grpcio reflection client on every gRPC port; prometheus_client parses /metrics.
judges:
    bash .ci/judges/run

# Fuzz the whole REST API against its OpenAPI document (schemathesis, from PyPI).
fuzz:
    bash .ci/fuzz-api

# Helm lint/template, Kubernetes schema validation, Dockerfile and compose settings checks.
deploy-check:
    bash .ci/deploy-check

# Exactly what CI runs.
ci:
    bash .ci/run

# One service, distributed, configured by GOMARK__* variables (see README).
run service:
    cargo run -p gomark -- run {{service}}

# The HubSpot simulator alone; every distinct bearer token gets its own portal.
hubspot-sim:
    cargo run -p hubspot-sim

# Distributed mode on this machine: the five services as separate processes on local
# Postgres, NATS and Redis, plus the simulators, all wired. Ctrl-C stops them all.
cluster *args:
    cargo run --release -p gomark -- cluster {{args}}

# Fault injection against real processes (kill -9, NATS and Postgres outages, replica kills
# during a rollout, tight HubSpot budgets); prints tables of fault -> result (RELIABILITY.md).
chaos *scenarios:
    cargo build -p gomark
    python3 .ci/chaos {{scenarios}}
    bash .ci/chaos-rollouts

# What ships: the size-optimised `gomark`, stripped, with its debug info split off
# (target/dist/app and target/dist/app.debug; see docker/split-debuginfo).
dist:
    cargo build --profile image --locked -p gomark --bin gomark
    docker/split-debuginfo target/image/gomark target/dist

# The runtime container image, built and run with podman (see .ci/image-check).
image-check:
    bash .ci/image-check
