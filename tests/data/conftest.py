"""Keep the data tests off the network."""

import os

# Must be set before ``datasets`` / ``huggingface_hub`` are imported, since
# both read these variables once at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
