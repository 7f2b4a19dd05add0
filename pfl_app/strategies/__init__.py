"""Federated strategies, one per file, all built on :class:`PersonalizedFedAvg`.

Each method registers itself with ``@register_method(name)`` (:mod:`pfl_app.methods`) where
it is defined; importing this package registers them all, in the order below (the order
the docs and error messages list them in). ``STRATEGIES`` is the registry seen as a
``name -> class`` mapping.
"""

from ..methods import StrategyTable
from .base import PersonalizedFedAvg
from .pftt import PFTT
from .send_all import SendAll
from .fedit import FedIT
from .fedadapter import FedAdapter
from .ffa_lora import FFALoRA
from .fedsa_lora import FedSALoRA
from .feddpa import FedDPA
from .local_only import LocalOnly
from .centralized import Centralized
from .pftt_median import PFTTMedian
from .flexlora import FlexLoRA
from .rlhf_base import RlhfFedAvg
from .pfit import PFIT
from .rlhf_fedavg import RlhfFedAvgUniform
from .rlhf_local import RlhfLocal
from .rlhf_single import RlhfSingleReward

STRATEGIES = StrategyTable()

__all__ = ["PFIT", "PFTT", "RlhfFedAvg", "RlhfFedAvgUniform", "RlhfLocal", "RlhfSingleReward", "STRATEGIES", "Centralized",
           "FFALoRA", "FedDPA", "FedAdapter", "FedIT", "FedSALoRA", "FlexLoRA", "LocalOnly", "PFTTMedian",
           "PersonalizedFedAvg", "SendAll"]
