"""Tiny numpy-only Flower 1.10 ServerApp for interop checks: FedAvg, 2 rounds, 2 clients,
fraction_evaluate 1.0, a fit-metrics aggregation fn, and a centralized evaluate_fn that
reports the mean of the global weights (0.0, 1.0, 2.0 after rounds 0, 1, 2 with the
InteropClient in client.py)."""
import numpy as np

from flwr.common import Metrics
from flwr.server import ServerApp, ServerConfig
from flwr.server.strategy import FedAvg


def weighted_average(metrics):
    """Weighted average (by num_examples) of every numeric metric; strings are dropped."""
    total = sum(n for n, _ in metrics)
    keys = sorted({k for _, m in metrics for k, v in m.items() if not isinstance(v, (str, bytes))})
    out: Metrics = {k: sum(n * float(m[k]) for n, m in metrics if k in m) / total for k in keys}
    out["clients"] = len(metrics)
    out["impls"] = ",".join(sorted(str(m.get("impl", "?")) for _, m in metrics))
    return out


def fit_config(server_round: int):
    return {"server_round": server_round, "lr": 0.1, "note": "interop"}


def central_evaluate(server_round, parameters, config):
    flat = np.concatenate([p.ravel() for p in parameters])
    return float(flat.mean()), {"min": float(flat.min()), "max": float(flat.max())}


strategy = FedAvg(
    fraction_fit=1.0,
    fraction_evaluate=1.0,
    min_fit_clients=2,
    min_evaluate_clients=2,
    min_available_clients=2,
    on_fit_config_fn=fit_config,
    evaluate_fn=central_evaluate,
    fit_metrics_aggregation_fn=weighted_average,
    evaluate_metrics_aggregation_fn=weighted_average,
)

app = ServerApp(config=ServerConfig(num_rounds=2), strategy=strategy)
