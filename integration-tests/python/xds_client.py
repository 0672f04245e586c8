"""A proxyless gRPC client for the xDS tests: grpcio's own xDS support, nothing else.

Usage: xds_client.py TARGET METHOD   (GRPC_XDS_BOOTSTRAP names the bootstrap file)

Opens one channel to TARGET (e.g. xds:///greeter.example.internal) and keeps it. Each line
"call N" on stdin makes N unary calls of METHOD and prints one line
"result SEQ {json}": how many answers each backend gave (by the name it answers with), and
"error:CODE" counts for failed calls. SEQ counts the lines read, from 1.
"""

import json
import sys

import grpc


def main():
    target, method = sys.argv[1], sys.argv[2]
    channel = grpc.insecure_channel(target)
    call = channel.unary_unary(method)
    for seq, line in enumerate(sys.stdin, start=1):
        words = line.split()
        if len(words) != 2 or words[0] != "call":
            print(f"result {seq} " + json.dumps({"bad command": line.strip()}), flush=True)
            continue
        counts = {}
        for _ in range(int(words[1])):
            try:
                name = call(b"hello", timeout=10, wait_for_ready=True).decode()
            except grpc.RpcError as e:
                name = f"error:{e.code().name}"
            counts[name] = counts.get(name, 0) + 1
        print(f"result {seq} " + json.dumps(counts, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
