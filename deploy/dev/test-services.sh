#!/usr/bin/env bash
# Make sure the real peers the tests talk to are here: dcmtk, Orthanc, Chromium (Debian packages) and a running
# PostgreSQL 15 with the role and database of the test suite. Idempotent; prints the test database URL last.
set -euo pipefail

need=()
command -v storescu >/dev/null || need+=(dcmtk)
command -v Orthanc >/dev/null || need+=(orthanc)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${need[*]}" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2
fi

if [ -n "${QC_TEST_DATABASE_URL:-}" ]; then
  echo "$QC_TEST_DATABASE_URL"
  exit 0
fi
if command -v pg_ctlcluster >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! pg_lsclusters -h 2>/dev/null | awk '$1=="15" && $2=="main"' | grep -q online; then
    $SUDO pg_ctlcluster 15 main start >&2
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  $SUDO su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='qc'\"" | grep -q 1 \
    || $SUDO su postgres -c "psql -q -c \"CREATE ROLE qc LOGIN PASSWORD 'qc'\"" >&2
  $SUDO su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='qc_test'\"" | grep -q 1 \
    || $SUDO su postgres -c "psql -q -c 'CREATE DATABASE qc_test OWNER qc'" >&2
  echo "postgresql+psycopg://qc:qc@127.0.0.1:5432/qc_test"
else
  echo "PostgreSQL 15 is not installed: set QC_TEST_DATABASE_URL to a PostgreSQL database for the storage tests" >&2
  exit 1
fi
