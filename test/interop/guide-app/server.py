"""The older Flower guide's "SSL-enabled Server" snippet (Flower 1.10 `start_server`, grpc-bidi),
for the library interop tests. Usage: server.py PORT CERT_DIR NUM_ROUNDS
Prints one line `HISTORY {json}` with the distributed losses and fit metrics, then exits."""
import json
import sys
from pathlib import Path

import flwr as fl

port, cert_dir, num_rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])

hist = fl.server.start_server(
    server_address=f"127.0.0.1:{port}",
    config=fl.server.ServerConfig(num_rounds=num_rounds),
    certificates=(
        (cert_dir / "ca.crt").read_bytes(),
        (cert_dir / "server.pem").read_bytes(),
        (cert_dir / "server.key").read_bytes(),
    ),
)
print("HISTORY " + json.dumps({"losses_distributed": hist.losses_distributed}), flush=True)
