#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ answer on 127.0.0.1, starting the ones that are
# installed but stopped. Exits non-zero, saying how to get a service, when one cannot be had:
# integration tests are never silently skipped.
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1; }

wait_up() {
  local port=$1 seconds=$2
  for _ in $(seq 1 "$seconds"); do up "$port" && return 0; sleep 1; done
  return 1
}

ensure() {
  local name=$1 port=$2 binary=$3 start=$4 install=$5
  if up "$port"; then echo "services: $name is up on 127.0.0.1:$port"; return 0; fi
  if command -v "$binary" >/dev/null 2>&1 || [ -x "$binary" ]; then
    echo "services: $name is down; starting it"
    bash -c "$start" >/dev/null 2>&1 || true
    if wait_up "$port" 90; then echo "services: $name started"; return 0; fi
  fi
  echo "services: ERROR: $name is not answering on 127.0.0.1:$port and could not be started." >&2
  echo "services: install it ($install) or start it, then run 'make test' again." >&2
  return 1
}

status=0
ensure PostgreSQL 5432 pg_ctlcluster \
  'pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start' \
  'apt-get install postgresql' || status=1
ensure Redis 6379 redis-server \
  'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no' \
  'apt-get install redis-server' || status=1
ensure RabbitMQ 5672 rabbitmq-server 'rabbitmq-server -detached' \
  'apt-get install rabbitmq-server' || status=1

# Debian packages the tests use without a daemon of their own: installed when missing
# (`sudo -n` when not root). `ensure_package PACKAGE SERVICE BINARY...`: the BINARYs must be
# on PATH afterwards; SERVICE (or "") is a daemon the package may start on install, stopped
# again: the tests start their own, on free loopback ports with temporary configurations.
ensure_package() {
  local package=$1 service=$2 binary
  shift 2
  local missing=0
  for binary in "$@"; do command -v "$binary" >/dev/null 2>&1 || missing=1; done
  if [ "$missing" -eq 0 ]; then echo "services: $package is installed ($*)"; return 0; fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  local install="$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $package"
  echo "services: installing $package from the Debian package"
  bash -c "$install" >/dev/null 2>&1 || { bash -c "$sudo apt-get update" >/dev/null 2>&1 && bash -c "$install" >/dev/null 2>&1; }
  if [ -n "$service" ] && pgrep -x "$service" >/dev/null 2>&1; then
    $sudo systemctl disable --now "$service" >/dev/null 2>&1 || $sudo service "$service" stop >/dev/null 2>&1 || true
  fi
  for binary in "$@"; do
    if ! command -v "$binary" >/dev/null 2>&1; then
      echo "services: ERROR: $binary missing and could not be installed." >&2
      echo "services: install it (apt-get install $package), then run 'make test' again." >&2
      return 1
    fi
  done
  echo "services: $package installed"
}

# Prometheus and promtool: tests/integration/test_prometheus.py checks the rules and scrapes.
ensure_package prometheus prometheus prometheus promtool || status=1
# Chromium for the console's browser tests (Playwright drives the system browser: nothing is
# downloaded at run time).
ensure_package chromium "" chromium || status=1
# HAProxy, the API's balancer (deploy/haproxy/haproxy.cfg): tests/e2e/cluster.py, make loadtest.
ensure_package haproxy haproxy haproxy || status=1
exit $status
