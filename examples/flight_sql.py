"""Query hopper's flight-server with Flight SQL, the way SQL tools do:
ADBC's Flight SQL driver (pip install adbc-driver-flightsql) through its
DBAPI, into polars, and partition by partition in parallel.

    HOPPER_PASSWORD=... python examples/flight_sql.py grpc://127.0.0.1:50051 alice "SELECT * FROM criteo"

(USER "-" connects to a server started with --auth none.) Prints one line
per step.
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import adbc_driver_flightsql.dbapi as flightsql
import polars as pl


def connect(uri: str, user: str):
    if user == "-":
        return flightsql.connect(uri)
    return flightsql.connect(
        uri, db_kwargs={"username": user, "password": os.environ["HOPPER_PASSWORD"]}
    )


def main() -> None:
    uri, user, sql = sys.argv[1:4]
    with connect(uri, user) as conn:
        # The whole result, every segment, into polars.
        df = pl.read_database(sql, connection=conn)
        print(f"polars: {df.height} rows, columns {df.columns}")

        # One partition per segment: read them in parallel, each on its own
        # connection (or hand the partitions to other processes or hosts).
        with conn.cursor() as cur:
            partitions, _schema = cur.adbc_execute_partitions(sql)

    def read(partition: bytes) -> int:
        with connect(uri, user) as c, c.cursor() as cur:
            cur.adbc_read_partition(partition)
            return cur.fetch_arrow_table().num_rows

    with ThreadPoolExecutor(max_workers=max(1, len(partitions))) as pool:
        rows = list(pool.map(read, partitions))
    print(f"partitions: {len(partitions)} read in parallel, rows {rows}")


if __name__ == "__main__":
    main()
