"""Reads a query from hopper's flight-server with ADBC's Flight SQL driver:
plans it with adbc_execute_partitions, reads every partition in parallel
(each on its own connection), and writes the rows into an Arrow IPC file.
Prints {"partitions", "rows"} as JSON.
Usage: adbc_read_to_ipc.py URI USER PASSWORD_ENV SQL OUT_PATH [INT_PARAM]
(USER "-" connects without logging in; the password is read from the
environment variable PASSWORD_ENV; INT_PARAM is bound to the query's $1)."""
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa


def main() -> None:
    uri, user, password_env, sql, out = sys.argv[1:6]
    params = (int(sys.argv[6]),) if len(sys.argv) > 6 else None
    kwargs = {} if user == "-" else {"username": user, "password": os.environ[password_env]}

    def connect():
        return flightsql.connect(uri, db_kwargs=kwargs)

    with connect() as conn, conn.cursor() as cur:
        if params is None:
            partitions, schema = cur.adbc_execute_partitions(sql)
        else:
            partitions, schema = cur.adbc_execute_partitions(sql, params)

    def read(partition):
        with connect() as c, c.cursor() as k:
            k.adbc_read_partition(partition)
            return k.fetch_arrow_table()

    with ThreadPoolExecutor(max_workers=max(1, len(partitions))) as pool:
        parts = list(pool.map(read, partitions))
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    print(json.dumps({"partitions": len(partitions), "rows": table.num_rows}))


if __name__ == "__main__":
    main()
