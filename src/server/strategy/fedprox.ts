/**
 * FedProx (Li et al., 2018), as Flower 1.10's `FedProx`: FedAvg on the server, plus
 * `proximal_mu` (a double) in every fit config so clients can add the proximal term
 * (mu / 2) * ||w - w_global||^2 to their loss.
 */
import { InvalidConfigError } from "../../core/errors";
import type { Parameters } from "../../core/records/legacy-types";
import type { ClientManager } from "../client-manager";
import { FedAvg, type FedAvgOptions } from "./fedavg";
import type { FitInstruction } from "./strategy";

export interface FedProxOptions extends FedAvgOptions {
  /** Weight of the proximal term; 0 makes FedProx equivalent to FedAvg. Required. */
  proximalMu: number;
}

export class FedProx extends FedAvg {
  readonly proximalMu: number;

  constructor(options: FedProxOptions) {
    super(options);
    if (typeof options.proximalMu !== "number" || !Number.isFinite(options.proximalMu)) {
      throw new InvalidConfigError(`FedProx needs a finite number as proximalMu, got ${String(options.proximalMu)}`);
    }
    this.proximalMu = options.proximalMu;
  }

  /** FedAvg's instructions with `proximal_mu` added to each config. */
  override async configureFit(
    serverRound: number,
    parameters: Parameters,
    clientManager: ClientManager,
  ): Promise<FitInstruction[]> {
    const pairs = await super.configureFit(serverRound, parameters, clientManager);
    return pairs.map(([client, ins]) => [
      client,
      { parameters: ins.parameters, config: { ...ins.config, proximal_mu: this.proximalMu } },
    ]);
  }
}
