"""Pinned snapshots through pyarrow: any Flight client can pin what it reads.

    snapshot_read.py URL USER PASSWORD_ENV pin
        logs in, pins a snapshot; prints {"bearer": …, "pin": {…}}
    snapshot_read.py URL USER PASSWORD_ENV read BEARER SNAPSHOT SQL
        plans SQL at SNAPSHOT (none when empty) with the Bearer token and
        reads every endpoint; prints {"endpoints", "rows", "sum"} (the sum of
        the first column)
"""

import json
import os
import sys

import pyarrow.compute as pc
import pyarrow.flight as fl


def main():
    url, user, password_env, mode = sys.argv[1:5]
    client = fl.FlightClient(url)
    if mode == "pin":
        header = client.authenticate_basic_token(user, os.environ[password_env])
        options = fl.FlightCallOptions(headers=[header])
        body = json.dumps({"ttl_seconds": 600}).encode()
        results = list(client.do_action(fl.Action("pin-snapshot", body), options))
        pin = json.loads(results[0].body.to_pybytes())
        print(json.dumps({"bearer": header[1].decode(), "pin": pin}))
        return
    bearer, snapshot, sql = sys.argv[5:8]
    auth = (b"authorization", bearer.encode())
    headers = [auth]
    if snapshot:
        headers.append((b"x-hopper-snapshot", snapshot.encode()))
    info = client.get_flight_info(
        fl.FlightDescriptor.for_command(sql), fl.FlightCallOptions(headers=headers)
    )
    rows, total = 0, 0
    for endpoint in info.endpoints:
        table = client.do_get(
            endpoint.ticket, fl.FlightCallOptions(headers=[auth])
        ).read_all()
        rows += table.num_rows
        if table.num_rows:
            total += pc.sum(table.column(0)).as_py() or 0
    print(json.dumps({"endpoints": len(info.endpoints), "rows": rows, "sum": total}))


if __name__ == "__main__":
    main()
