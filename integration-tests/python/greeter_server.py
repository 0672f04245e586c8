"""A gRPC backend for the xDS tests: answers every unary call with its name.

Usage: greeter_server.py NAME

Listens on 127.0.0.1 on a port the kernel picks and prints "listening PORT" once serving.
Requests and responses are raw bytes (no generated code): the reply is NAME, UTF-8.
"""

import sys
from concurrent import futures

import grpc


def main():
    name = sys.argv[1].encode()

    def answer(request, context):
        return name

    class Any(grpc.GenericRpcHandler):
        def service(self, details):
            return grpc.unary_unary_rpc_method_handler(answer)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((Any(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
