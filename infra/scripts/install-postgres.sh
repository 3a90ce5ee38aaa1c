#!/bin/sh
# Install the PostgreSQL server binaries (initdb, pg_ctl, postgres) that the cluster tests start as a
# throwaway server on 127.0.0.1. Debian/Ubuntu only; needs root or sudo. Does nothing when already there.
# The Debian package also starts a system-wide cluster on port 5432; the tests never use it.
set -eu

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "install-postgres: PostgreSQL server binaries already installed:" /usr/lib/postgresql/*/bin/initdb
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-postgres: no apt-get here; install the PostgreSQL server (initdb, pg_ctl) by hand" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends postgresql
ls /usr/lib/postgresql/*/bin/initdb
