"""Read a query from hopper's flight-server with pyarrow: every endpoint
(one per segment) in parallel, into pandas, and as a PyTorch-style batch
loop that never holds the whole table.

    python examples/read_parallel.py grpc+tcp://127.0.0.1:50051 "SELECT * FROM criteo"
"""
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight


def endpoints(location: str, sql: str):
    client = flight.connect(location)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql))
    return info.schema, info.endpoints


def read_endpoint(location: str, endpoint: flight.FlightEndpoint) -> pa.Table:
    where = endpoint.locations[0] if endpoint.locations else location
    return flight.connect(where).do_get(endpoint.ticket).read_all()


def batches(location: str, endpoint: flight.FlightEndpoint, batch_size: int):
    """Mini-batches of (features, labels) as numpy arrays, streamed."""
    where = endpoint.locations[0] if endpoint.locations else location
    reader = flight.connect(where).do_get(endpoint.ticket)
    numeric = None
    for chunk in reader:
        rb = chunk.data
        if numeric is None:
            numeric = [f.name for f in rb.schema if pa.types.is_floating(f.type)]
        x = np.stack([rb.column(n).to_numpy(zero_copy_only=False) for n in numeric], axis=1)
        x = np.nan_to_num(x.astype(np.float32))
        y = rb.column("label").to_numpy(zero_copy_only=False)
        for start in range(0, rb.num_rows, batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]


def main() -> None:
    location, sql = sys.argv[1], sys.argv[2]
    schema, eps = endpoints(location, sql)
    print(f"{len(eps)} endpoints; schema: {schema}")

    with ThreadPoolExecutor(max_workers=len(eps)) as pool:
        tables = list(pool.map(lambda ep: read_endpoint(location, ep), eps))
    df = pa.concat_tables(tables).to_pandas()
    print(df.describe().T.head(8))

    # A training-style loop over the first endpoint: bounded memory.
    seen = 0
    for x, y in batches(location, eps[0], batch_size=256):
        seen += len(y)  # model.train_step(torch.from_numpy(x), torch.from_numpy(y))
    print(f"streamed {seen} rows from endpoint 0 in mini-batches of 256")


if __name__ == "__main__":
    main()
