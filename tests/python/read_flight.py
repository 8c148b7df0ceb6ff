"""Reads every endpoint of a query from hopper's flight-server with pyarrow,
in parallel, and prints a JSON summary the Rust test compares with
PostgreSQL. Usage: read_flight.py LOCATION SQL"""
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight


def main() -> None:
    location, sql = sys.argv[1], sys.argv[2]
    client = flight.connect(location)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql))

    def read(endpoint: flight.FlightEndpoint) -> pa.Table:
        where = endpoint.locations[0] if endpoint.locations else location
        return flight.connect(where).do_get(endpoint.ticket).read_all()

    with ThreadPoolExecutor(max_workers=len(info.endpoints)) as pool:
        tables = list(pool.map(read, info.endpoints))
    table = pa.concat_tables(tables)
    assert table.schema.equals(info.schema), (table.schema, info.schema)
    texts = sorted(t for t in table.column("t").to_pylist() if t is not None)
    print(json.dumps({
        "endpoints": len(info.endpoints),
        "rows": table.num_rows,
        "sum_i8": pc.sum(table.column("i8")).as_py(),
        "nulls": {name: table.column(name).null_count for name in table.column_names},
        "types": {f.name: str(f.type) for f in table.schema},
        "texts": texts,
    }))


if __name__ == "__main__":
    main()
