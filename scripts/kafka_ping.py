#!/usr/bin/env python3
"""Exit 0 if HOST:PORT answers a Kafka ApiVersions request, else print why and exit 1.

Tells a Kafka-protocol broker apart from any other process holding the port.
Usage: kafka_ping.py HOST PORT
"""
import socket
import struct
import sys

host, port = sys.argv[1], int(sys.argv[2])
client = b"cdc-ping"
# ApiVersions (key 18) v0: api_key, api_version, correlation_id, client_id.
body = struct.pack(">hhih", 18, 0, 4242, len(client)) + client
try:
    with socket.create_connection((host, port), timeout=2) as s:
        s.settimeout(2)
        s.sendall(struct.pack(">i", len(body)) + body)
        head = s.recv(8)
except OSError as e:
    print(f"{host}:{port}: {e}")
    sys.exit(1)
if len(head) < 8 or struct.unpack(">i", head[4:8])[0] != 4242:
    print(f"{host}:{port} is open but does not speak the Kafka protocol")
    sys.exit(1)
