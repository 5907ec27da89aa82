"""Tiny numpy-only Flower 1.10 ClientApp for interop checks (no ML, deterministic numbers).

get_parameters -> two float32 arrays of zeros (shapes [2,3] and [4]).
fit            -> every weight + 1.0; 10 examples; metrics include the prefix-related keys
                  `loss` / `loss_avg` (they sort differently under upb and standard map order),
                  an int, and echoes of the server's config.
evaluate       -> loss = mean of all weights; 5 examples; metrics with prefix-related
                  keys `acc` / `accuracy`.
"""
import numpy as np

from flwr.client import ClientApp, NumPyClient
from flwr.common import Context


class InteropClient(NumPyClient):
    def get_parameters(self, config):
        return [np.zeros((2, 3), dtype=np.float32), np.zeros((4,), dtype=np.float32)]

    def fit(self, parameters, config):
        updated = [p + np.float32(1.0) for p in parameters]
        metrics = {
            "loss": 0.5,
            "loss_avg": 0.25,
            "num_batches": 3,
            "server_round": int(config.get("server_round", -1)),
            "impl": "python",
        }
        return updated, 10, metrics

    def evaluate(self, parameters, config):
        flat = np.concatenate([p.ravel() for p in parameters])
        loss = float(flat.mean())
        return loss, 5, {"acc": 0.75, "accuracy": 0.5, "impl": "python"}


def client_fn(context: Context):
    return InteropClient().to_client()


app = ClientApp(client_fn=client_fn)
