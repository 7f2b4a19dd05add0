"""Federated strategies, one per file, all built on :class:`PersonalizedFedAvg`.

``STRATEGIES`` maps each ``method`` run-config value to its strategy class.
"""

from .base import PersonalizedFedAvg
from .pftt import PFTT
from .send_all import SendAll

STRATEGIES: dict[str, type[PersonalizedFedAvg]] = {
    "pftt": PFTT,
    "send-all": SendAll,
}

__all__ = ["PFTT", "STRATEGIES", "PersonalizedFedAvg", "SendAll"]
