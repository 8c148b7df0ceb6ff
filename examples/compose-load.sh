#!/bin/sh
# docker-compose's data loader: examples/compose-data.sql on every segment,
# each getting its share of HOPPER_ROWS rows of `criteo` (once: a table
# that already has rows is left as it is).
set -eu
segments="$*"
count=$#
i=0
for host in $segments; do
    psql -h "$host" -U hopper -d hopper -q -v segment="$i" -v segments="$count" \
        -v rows="${HOPPER_ROWS:-20000}" -f /examples/compose-data.sql
    i=$((i + 1))
done
