"""Logs in to a hopper flight-server with pyarrow (authenticate_basic_token),
plans SQL, reads every endpoint in parallel — each at the location it
names — and writes the rows into an Arrow IPC file.
Prints {"endpoints", "rows", "locations"} as JSON.
Usage: read_to_ipc.py LOCATION USER PASSWORD_ENV SQL OUT_PATH
(the password is read from the environment variable PASSWORD_ENV)."""
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.flight as flight


def main() -> None:
    location, user, password_env, sql, out = sys.argv[1:6]
    client = flight.connect(location)
    header = client.authenticate_basic_token(user, os.environ[password_env])
    options = flight.FlightCallOptions(headers=[header])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql), options)

    def read(endpoint):
        where = endpoint.locations[0].uri.decode() if endpoint.locations else location
        return where, flight.connect(where).do_get(endpoint.ticket, options).read_all()

    with ThreadPoolExecutor(max_workers=max(1, len(info.endpoints))) as pool:
        parts = list(pool.map(read, info.endpoints))
    table = pa.concat_tables([t for _, t in parts]) if parts else info.schema.empty_table()
    with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    print(json.dumps({
        "endpoints": len(info.endpoints),
        "rows": table.num_rows,
        "locations": [w for w, _ in parts],
    }))


if __name__ == "__main__":
    main()
