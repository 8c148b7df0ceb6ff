"""Asks a server for its health in the standard gRPC health protocol
(grpc.health.v1) with grpcio-health-checking, a client hopper did not
write, and prints what it answered as JSON.

Usage:
  health_probe.py check HOST:PORT [SERVICE]
      {"status": "SERVING"} (or NOT_SERVING, ...), or {"code": "NOT_FOUND"}
  health_probe.py watch HOST:PORT SERVICE STATUS BOUND_SECS
      follows Watch until the server reports STATUS:
      {"reached": true, "seen": ["NOT_SERVING", "SERVING"]}; gives up after
      BOUND_SECS (a bound on the test, not a measurement) with
      {"reached": false, "seen": [...], "code": "DEADLINE_EXCEEDED"}
"""
import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

NAMES = health_pb2.HealthCheckResponse.ServingStatus.Name


def main() -> None:
    mode, address = sys.argv[1], sys.argv[2]
    service = sys.argv[3] if len(sys.argv) > 3 else ""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        if mode == "check":
            try:
                answer = stub.Check(request, timeout=30)
                print(json.dumps({"status": NAMES(answer.status)}))
            except grpc.RpcError as e:
                print(json.dumps({"code": e.code().name, "details": e.details()}))
        elif mode == "watch":
            want, bound = sys.argv[4], float(sys.argv[5])
            seen = []
            try:
                for answer in stub.Watch(request, timeout=bound):
                    seen.append(NAMES(answer.status))
                    if seen[-1] == want:
                        print(json.dumps({"reached": True, "seen": seen}))
                        return
                print(json.dumps({"reached": False, "seen": seen, "code": "END"}))
            except grpc.RpcError as e:
                print(json.dumps({"reached": False, "seen": seen, "code": e.code().name}))
        else:
            sys.exit(f"unknown mode {mode!r}: check or watch")


if __name__ == "__main__":
    main()
