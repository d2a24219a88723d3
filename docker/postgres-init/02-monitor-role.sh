#!/bin/sh
# The collector's postgresql receiver (collector/otelcol-postgresql.yaml) reads the server's connection numbers for
# the fleet's connection budget as a login role with pg_monitor and nothing else. Runs once, on a new data volume.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -v password="$POSTGRES_MONITOR_PASSWORD" <<'SQL'
CREATE ROLE poolscope_monitor LOGIN PASSWORD :'password';
GRANT pg_monitor TO poolscope_monitor;
SQL
