"""Federated strategies, one per file, all built on :class:`PersonalizedFedAvg`.

``STRATEGIES`` maps each ``method`` run-config value to its strategy class.
"""

from .base import PersonalizedFedAvg
from .centralized import Centralized
from .feddpa import FedDPA
from .fedadapter import FedAdapter
from .fedit import FedIT
from .fedsa_lora import FedSALoRA
from .ffa_lora import FFALoRA
from .flexlora import FlexLoRA
from .local_only import LocalOnly
from .pfit import PFIT
from .pftt import PFTT
from .pftt_median import PFTTMedian
from .rlhf_base import RlhfFedAvg
from .rlhf_fedavg import RlhfFedAvgUniform
from .rlhf_local import RlhfLocal
from .rlhf_single import RlhfSingleReward
from .send_all import SendAll

STRATEGIES: dict[str, type[PersonalizedFedAvg]] = {
    "pftt": PFTT,
    "send-all": SendAll,
    "fedit": FedIT,
    "fedadapter": FedAdapter,
    "ffa-lora": FFALoRA,
    "fedsa-lora": FedSALoRA,
    "local-only": LocalOnly,
    "centralized": Centralized,
    "feddpa": FedDPA,
    "pftt-median": PFTTMedian,
    "flexlora": FlexLoRA,
    "pfit": PFIT,
    "rlhf-fedavg": RlhfFedAvgUniform,
    "rlhf-local": RlhfLocal,
    "rlhf-single": RlhfSingleReward,
}

__all__ = ["PFIT", "PFTT", "RlhfFedAvg", "RlhfFedAvgUniform", "RlhfLocal", "RlhfSingleReward", "STRATEGIES", "Centralized", "FFALoRA", "FedDPA", "FedAdapter", "FedIT", "FedSALoRA", "LocalOnly",
           "PersonalizedFedAvg", "SendAll"]
