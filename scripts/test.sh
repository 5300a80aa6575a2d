#!/usr/bin/env bash
# Runs the whole test suite with every feature on: unit, integration (real loopback servers: hyper,
# dnsmasq, etcd, ZooKeeper — each test starts and stops its own) and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --all-features "$@"
# The sidecar example's own unit tests (configuration defaults and checks, header rules, error mapping).
cargo test --all-features --example sidecar "$@"
