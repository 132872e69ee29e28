#!/bin/sh
# Creates the Temporal databases on PostgreSQL and brings both schemas to the version the
# admin-tools image ships. Safe to re-run: `create` ignores an existing database,
# `setup-schema -v 0.0` skips a database already past 0.0, `update-schema` applies only
# missing versions. Run by the `temporal-schema` service of docker-compose.yml; the
# password comes from $SQL_PASSWORD, which temporal-sql-tool reads itself.
set -eu

schema_root=/etc/temporal/schema/postgresql/v12

sql() {
    db=$1
    shift
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" \
        -u "$POSTGRES_USER" --db "$db" "$@"
}

for pair in temporal:temporal temporal_visibility:visibility; do
    db=${pair%%:*}
    schema=${pair#*:}
    echo "setting up database $db"
    sql "$db" create
    sql "$db" setup-schema -v 0.0
    sql "$db" update-schema -d "$schema_root/$schema/versioned"
done
echo "Temporal schema is up to date"
