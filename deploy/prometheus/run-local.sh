#!/usr/bin/env bash
# Runs Prometheus (Debian's `prometheus` package) against a local ferry started with
# `ferry serve --metrics 127.0.0.1:2112`, keeping its data under ${PROM_DATA:-/tmp/ferry-prometheus}.
# The UI and HTTP API answer on http://127.0.0.1:${PROM_PORT:-9090}; stop it with Ctrl-C.
#
# Example, with a load run beside it:
#   ferry serve --upstream http://127.0.0.1:5000 --metrics 127.0.0.1:2112 &
#   deploy/prometheus/run-local.sh &
#   ferry load run --target http://127.0.0.1:8080 --images images.txt --ns 127.0.0.1:5000 ...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${PROM_DATA:-/tmp/ferry-prometheus}"
port="${PROM_PORT:-9090}"
command -v prometheus >/dev/null || { echo "prometheus is not installed: apt-get install prometheus" >&2; exit 1; }
if command -v promtool >/dev/null; then
  promtool check config "$here/prometheus.yml" >/dev/null
fi
mkdir -p "$data"
exec prometheus \
  --config.file="$here/prometheus.yml" \
  --storage.tsdb.path="$data" \
  --web.listen-address="127.0.0.1:$port"
