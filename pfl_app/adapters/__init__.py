"""Bottleneck adapters (Houlsby/Pfeiffer style) for decoder-only transformers.

peft ships no bottleneck adapter, and the AdapterHub ``adapters`` package pins a
transformers release that conflicts with this project's datasets and trl, so this small
tuner is written here, laid out like a peft tuner: a config dataclass
(:mod:`.config`), the layer (:mod:`.layer`) and the injection (:mod:`.inject`).
"""

from .config import BottleneckConfig
from .inject import (
    ADAPTER_MODULE_NAME,
    adapter_state_dict,
    inject_bottleneck_adapters,
    is_adapter_key,
)
from .layer import BottleneckAdapter

__all__ = [
    "ADAPTER_MODULE_NAME",
    "BottleneckAdapter",
    "BottleneckConfig",
    "adapter_state_dict",
    "inject_bottleneck_adapters",
    "is_adapter_key",
]
