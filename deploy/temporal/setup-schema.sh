#!/bin/sh
# Create or migrate Temporal's two PostgreSQL databases. Runs once per `docker compose up`
# in the temporalio/admin-tools image, before the server starts: the job the deprecated
# temporalio/auto-setup image did at boot (the upstream compose files do the same).
#
# Safe to run again: `create` fails harmlessly on a database that exists, `setup-schema
# -v 0.0` skips an initialised database, and `update-schema` applies only the migrations
# newer than the recorded version, which is also how a server upgrade migrates.
set -eu

: "${POSTGRES_SEEDS:?set POSTGRES_SEEDS (the PostgreSQL host)}"
: "${POSTGRES_USER:?set POSTGRES_USER}"
: "${POSTGRES_PWD:?set POSTGRES_PWD}"
port="${DB_PORT:-5432}"
schema=/etc/temporal/schema/postgresql/v12

# temporal-sql-tool reads the password from the environment, keeping it out of `ps`.
SQL_PASSWORD="$POSTGRES_PWD"
export SQL_PASSWORD

sql_tool() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$port" \
        -u "$POSTGRES_USER" "$@"
}

migrate() {
    db="$1"
    versions="$2"
    echo "temporal schema: $db"
    sql_tool --db "$db" create || echo "temporal schema: $db exists"
    sql_tool --db "$db" setup-schema -v 0.0
    sql_tool --db "$db" update-schema -d "$versions"
}

migrate "${DBNAME:-temporal}" "$schema/temporal/versioned"
migrate "${VISIBILITY_DBNAME:-temporal_visibility}" "$schema/visibility/versioned"
echo "temporal schema: up to date"
