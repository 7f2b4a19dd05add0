"""The base of the RLHF strategies: PFIT and its federated and local baselines."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from ..protocol import LAST_ROUND_KEY, PREFERENCE_KEY, PREFERENCE_OWN, START_FROM_GLOBAL, START_FROM_KEY
from .base import PersonalizedFedAvg


class RlhfFedAvg(PersonalizedFedAvg):
    """Clients run GRPO on their prompts, rewarded by a mix of the helpfulness and safety
    reward models (see :mod:`pfl_app.rlhf`); the policy's LoRA is what trains and travels.

    Three message-config entries steer the clients:

    - ``preference``: ``"own"`` (each client mixes the rewards with its own weights),
      ``"uniform"`` (every client weights both 0.5) or ``"helpfulness"`` (the helpfulness
      reward alone), from :attr:`preference`;
    - ``start-from``: ``"global"`` (each round starts from the global policy just
      received: FedAvg's local training) or ``"personal"`` (from the client's own policy of
      its last round, with the proximal term pulling it toward the global one: each client's
      model carries its own preference across rounds), from :attr:`start_from`;
    - ``last-round``: in the last round's evaluation, clients score their final evaluation
      set (``rlhf.final-eval-prompts``) and also the base model (no LoRA), so one run
      compares the base model with what training made of it.

    Each client keeps the LoRA it ends its last round with: that is its personalized model.
    """

    shared_groups = ("lora_A", "lora_B")
    trained_groups = ("lora_A", "lora_B")
    client_kind = "rlhf"
    preference: str = PREFERENCE_OWN
    start_from: str = START_FROM_GLOBAL
    # num_rounds (which round is the last) is the base's setting.

    def _with_groups(self, config: ConfigRecord) -> ConfigRecord:
        config = super()._with_groups(config)
        config[PREFERENCE_KEY] = self.preference
        config[START_FROM_KEY] = self.start_from
        return config

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        config = ConfigRecord({**config, LAST_ROUND_KEY: server_round == self.num_rounds})
        return list(super().configure_evaluate(server_round, arrays, config, grid))
