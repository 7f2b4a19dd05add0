"""Data sources and client partitioning for the federated app."""

from pfl_app.data.partition import PARTITIONERS, load_client_data, make_partitioner
from pfl_app.data.sources import EMBEDDED_SOURCES, load_source, source_kind

__all__ = [
    "EMBEDDED_SOURCES",
    "PARTITIONERS",
    "load_client_data",
    "load_source",
    "make_partitioner",
    "source_kind",
]
