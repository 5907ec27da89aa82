"""The older Flower guide's "SSL-enabled Client" snippet (Flower 1.10 `start_numpy_client`), for
the library interop tests. Usage: client.py ADDRESS CA_CERT OFFSET NUM_EXAMPLES [TRANSPORT]

Deterministic: get_parameters -> [[1, 2]] (float32); fit adds OFFSET to every weight and reports
NUM_EXAMPLES; evaluate's loss is weights[0] + OFFSET. Prints `RECEIVED {json}` (the weights
each fit and evaluate got) when start_numpy_client returns."""
import json
import sys
from pathlib import Path

import flwr as fl
import numpy as np

address, ca_cert, offset, examples = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
transport = sys.argv[5] if len(sys.argv) > 5 else None
received = {"fit": [], "evaluate": []}


class FlowerClient(fl.client.NumPyClient):
    def get_parameters(self, config):
        return [np.array([1.0, 2.0], dtype=np.float32)]

    def fit(self, parameters, config):
        received["fit"].append([float(x) for x in parameters[0]])
        return [parameters[0] + np.float32(offset)], examples, {"impl": "python"}

    def evaluate(self, parameters, config):
        received["evaluate"].append([float(x) for x in parameters[0]])
        return float(parameters[0][0]) + offset, examples, {"impl": "python"}


fl.client.start_numpy_client(
    server_address=address,
    client=FlowerClient(),
    root_certificates=ca_cert.read_bytes(),
    transport=transport,
)
print("RECEIVED " + json.dumps(received), flush=True)
