"""Talks to hopper's flight-server with ADBC's Flight SQL driver (from PyPI)
through its DBAPI, the way an analyst would, and prints what it saw as JSON
for the Rust test to check against PostgreSQL.
Usage: adbc_flightsql.py URI USER PASSWORD_ENV"""
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa


def connect(uri, user, password):
    return flightsql.connect(uri, db_kwargs={"username": user, "password": password})


def rows_of(table):
    """Rows as lists; timestamps as epoch microseconds."""
    columns = []
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us")).cast(pa.int64())
        columns.append(col.to_pylist())
    return [list(r) for r in zip(*columns)]


def error_of(cur, sql):
    try:
        cur.execute(sql)
        cur.fetchall()
    except Exception as e:  # the driver's DBAPI error, with the server's status
        return {"type": type(e).__name__, "message": str(e)}
    return None


def main():
    uri, user, password_env = sys.argv[1:4]
    password = os.environ[password_env]
    out = {}
    with connect(uri, user, password) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, v, f, b, ts, note FROM typed ORDER BY id")
        out["typed"] = rows_of(cur.fetch_arrow_table())

        cur.execute("SELECT id FROM typed WHERE id >= $1 AND v <> $2 ORDER BY id", (1005, "v1007"))
        out["bound"] = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT count(*) AS n FROM typed WHERE v = ?", ("v1",))
        # An aggregate runs on each segment: one count per segment.
        out["bound_question"] = sum(r[0] for r in cur.fetchall())

        partitions, schema = cur.adbc_execute_partitions("SELECT id FROM typed")
        out["partitions"] = len(partitions)
        out["partition_schema"] = [f.name for f in schema]

        def read(partition):
            with connect(uri, user, password) as c, c.cursor() as k:
                k.adbc_read_partition(partition)
                return sorted(r[0] for r in k.fetchall())

        with ThreadPoolExecutor(max_workers=len(partitions)) as pool:
            out["partition_ids"] = list(pool.map(read, partitions))

        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        found = {}
        for catalog in objects:
            for schema_ in catalog["catalog_db_schemas"] or []:
                for table in schema_["db_schema_tables"] or []:
                    key = f'{catalog["catalog_name"]}.{schema_["db_schema_name"]}.{table["table_name"]}'
                    found[key] = {
                        "type": table["table_type"],
                        "columns": [c["column_name"] for c in table["table_columns"] or []],
                    }
        out["objects"] = found
        out["table_types"] = conn.adbc_get_table_types()
        schema = conn.adbc_get_table_schema("typed")
        out["table_schema"] = [[f.name, str(f.type)] for f in schema]
        info = conn.adbc_get_info()
        out["vendor"] = info.get("vendor_name")

        data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "label": ["a", "b", None]})
        out["ingest_create"] = cur.adbc_ingest("ingested", data, mode="create")
        out["ingest_append"] = cur.adbc_ingest("ingested", data, mode="append")
        out["ingest_again"] = error_of_ingest(cur, data)
        conn.commit()

        out["bad"] = error_of(cur, "SELEC id FROM typed")
        out["denied"] = error_of(cur, "SELECT * FROM secret")
        cur.execute("SELECT count(*) AS n FROM typed")
        out["after_errors"] = sum(r[0] for r in cur.fetchall())
    print(json.dumps(out))


def error_of_ingest(cur, data):
    try:
        cur.adbc_ingest("ingested", data, mode="create")
    except Exception as e:
        return {"type": type(e).__name__, "message": str(e)}
    return None


if __name__ == "__main__":
    main()
