"""Logs in to hopper's flight-server the way pyarrow does it
(authenticate_basic_token), reads every endpoint of a query with the
returned bearer token, and prints {"endpoints", "rows"} as JSON.
Usage: auth_read.py LOCATION USER PASSWORD_ENV SQL [ROOT_CERT_PEM]
(the password is read from the environment variable PASSWORD_ENV)."""
import json
import os
import sys

import pyarrow.flight as flight


def main() -> None:
    location, user, password_env, sql = sys.argv[1:5]
    kwargs = {}
    if len(sys.argv) > 5:
        with open(sys.argv[5], "rb") as f:
            kwargs["tls_root_certs"] = f.read()
    client = flight.connect(location, **kwargs)
    header = client.authenticate_basic_token(user, os.environ[password_env])
    options = flight.FlightCallOptions(headers=[header])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql), options)
    rows = 0
    for endpoint in info.endpoints:
        where = endpoint.locations[0] if endpoint.locations else location
        reader = flight.connect(where, **kwargs).do_get(endpoint.ticket, options)
        rows += reader.read_all().num_rows
    print(json.dumps({"endpoints": len(info.endpoints), "rows": rows}))


if __name__ == "__main__":
    main()
