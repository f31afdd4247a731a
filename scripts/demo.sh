#!/usr/bin/env bash
# Set up (first time) and run the demo: one simulated day of model C1b on the bundled real candles.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
prod-system dump-market-data --start 2023-07-20T00:00:00Z --end 2023-07-22T00:00:00Z \
  --out demo_output/snapshot.parquet
prod-system simulate --model C1b --market-data demo_output/snapshot.parquet \
  --start 2023-07-21T00:00:00Z --end 2023-07-22T00:00:00Z --root demo_output --overwrite
