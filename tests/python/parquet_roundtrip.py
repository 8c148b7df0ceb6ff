"""Writes a Parquet file with pyarrow, or reads it back through hopper's
flight-server (--files) and checks it is equal to what was written.
Usage: parquet_roundtrip.py write DIR | check DIR LOCATION"""
import sys

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq


def table() -> pa.Table:
    n = 5000
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "label": pa.array([i % 2 for i in range(n)], pa.int32()),
        "x": pa.array([None if i % 11 == 0 else i / 7.0 for i in range(n)], pa.float64()),
        "name": pa.array([None if i % 13 == 0 else f"row {i}" for i in range(n)], pa.string()),
        "pixels": pa.array([[float(i), float(i) / 2] for i in range(n)], pa.list_(pa.float32())),
    })


def main() -> None:
    mode, directory = sys.argv[1], sys.argv[2]
    if mode == "write":
        pq.write_table(table(), f"{directory}/events.parquet", row_group_size=1000)
        return
    client = flight.connect(sys.argv[3])
    info = client.get_flight_info(flight.FlightDescriptor.for_command("SELECT * FROM events"))
    parts = [client.do_get(ep.ticket).read_all() for ep in info.endpoints]
    got = pa.concat_tables(parts).sort_by("id")
    want = table()
    assert got.num_rows == want.num_rows, (got.num_rows, want.num_rows)
    for name in want.column_names:
        g, w = got.column(name).combine_chunks(), want.column(name).combine_chunks()
        # DataFusion may relabel list items ("item" vs "element"): compare values.
        assert g.to_pylist() == w.to_pylist(), name
    print(len(info.endpoints))


if __name__ == "__main__":
    main()
