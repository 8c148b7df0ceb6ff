"""Logs in to a hopper flight-server with pyarrow, plans SQL, then either
leaves without reading (MODE=plan) or reads one batch of the first endpoint
and vanishes mid-stream without closing anything (MODE=one-batch).
Prints {"endpoints"} as JSON before it leaves.
Usage: plan_then_leave.py LOCATION USER PASSWORD_ENV SQL MODE"""
import json
import os
import sys

import pyarrow.flight as flight


def main() -> None:
    location, user, password_env, sql, mode = sys.argv[1:6]
    client = flight.connect(location)
    header = client.authenticate_basic_token(user, os.environ[password_env])
    options = flight.FlightCallOptions(headers=[header])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql), options)
    print(json.dumps({"endpoints": len(info.endpoints)}), flush=True)
    if mode == "one-batch":
        reader = client.do_get(info.endpoints[0].ticket, options)
        reader.read_chunk()
        os._exit(0)  # vanish: no cancel, no close


if __name__ == "__main__":
    main()
