"""Tokenise a split once with the encoder's fast tokenizer and cache the result on disk.

The cache key covers the tokenizer (its full serialised definition), the max length, the task's
label set and the split's content (every text, label and group value read), so changing any of
them invalidates it. A kind with its own tokenisation (tagging's windows of words) is cached the
same way where it gives a key of its rows and settings (``TaskKind.tokenize_key``). Caches are ``.npz`` files of plain integer arrays (loaded with
``allow_pickle=False``) written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from ..kinds.base import SEG_SPECIAL
from ..records import RawSplit, TokenizedSplit
from ..run_dir import atomic_write
from ..tasks.schema import TaskDef

log = logging.getLogger(__name__)

CACHE_VERSION = "1"
# segment ids stored per token: 0 = first text, 1 = second text, SEG_SPECIAL = special/other tokens


def default_cache_dir() -> Path:
    env = os.environ.get("MTDNN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mtdnn" / "tokenized"


def tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # truncation/padding are left in the backend by the tokenizer's last call (max_len is keyed
        # separately): without dropping them, the key changed after the first split was tokenised
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        h.update(json.dumps(spec, sort_keys=True).encode())
    else:  # slow tokenizers: vocabulary and special tokens
        h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return h.hexdigest()


def content_hash(task: TaskDef, raw: RawSplit, max_len: int, tok_fp: str) -> str:
    h = hashlib.sha256()
    meta = {"v": CACHE_VERSION, "max_len": max_len, "tok": tok_fp, "type": task.type,
            "labels": task.labels, "input": task.input}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for uid, a, b, y in zip(raw.ids, raw.text_a, raw.text_b, raw.labels):
        h.update(f"{uid}\x1f{a}\x1f{b}\x1f{y}\x1e".encode("utf-8", "surrogatepass"))
    if raw.group_keys is not None:  # only with a group column: keys without one are unchanged
        h.update(b"\x1dgroups")
        for g in raw.group_keys:
            h.update(f"\x1f{g}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:32]


def encode_labels(task: TaskDef, raw: RawSplit) -> tuple[np.ndarray, np.ndarray]:
    """(labels, groups) of a split, as the task's kind encodes them."""
    return task.kind.encode_labels(task, raw)


def tokenize_split(task: TaskDef, raw: RawSplit, tokenizer, max_len: int,
                   cache_dir: str | Path | None = None) -> TokenizedSplit:
    """Tokenise (or load from the cache) one split; a kind with its own tokenisation does it (and
    caches it where it gives a ``tokenize_key``)."""
    own_key = task.kind.tokenize_key(task, raw, max_len) if cache_dir is not None else None
    if own_key is not None:
        return _own_cached(task, raw, tokenizer, max_len, Path(cache_dir), own_key)  # type: ignore[arg-type]
    own = task.kind.tokenize(task, raw, tokenizer, max_len)
    if own is not None:
        return TokenizedSplit(task.name, raw.split, **own)
    tok_fp = tokenizer_fingerprint(tokenizer)
    key = content_hash(task, raw, max_len, tok_fp)
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"{task.name}.{raw.split}.{key}.npz"
        if cache_path.is_file():
            try:
                return _load(cache_path, task, raw)
            except Exception as e:  # a damaged cache is rebuilt, not trusted
                log.warning("ignoring unreadable cache %s (%s)", cache_path, e)
    tok = _tokenize(task, raw, tokenizer, max_len)
    if cache_path is not None:
        _save(cache_path, tok)
    return tok


def _own_cached(task: TaskDef, raw: RawSplit, tokenizer, max_len: int, cache_dir: Path, own_key: str) -> TokenizedSplit:
    """A kind's own tokenisation, from the cache when it holds this tokenizer, max length and
    ``own_key`` (the kind's rows and settings), else computed and written there."""
    meta = {"v": CACHE_VERSION, "max_len": max_len, "tok": tokenizer_fingerprint(tokenizer), "type": task.type,
            "own": own_key}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:32]
    path = cache_dir / f"{task.name}.{raw.split}.{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            log.info("%s/%s: tokenised windows from the cache %s", task.name, raw.split, path)
            return TokenizedSplit(task.name, raw.split, **task.kind.from_tokenized_arrays(task, raw, arrays))
        except Exception as e:  # a damaged cache is rebuilt, not trusted
            log.warning("ignoring unreadable cache %s (%s)", path, e)
    own = task.kind.tokenize(task, raw, tokenizer, max_len)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        np.savez(f, **task.kind.tokenized_arrays(own))
    return TokenizedSplit(task.name, raw.split, **own)


def _tokenize(task: TaskDef, raw: RawSplit, tokenizer, max_len: int) -> TokenizedSplit:
    ids_l, tt_l, seg_l, lens = [], [], [], []
    has_tt = None
    step = 4096
    for start in range(0, len(raw), step):
        a = raw.text_a[start:start + step]
        b = raw.text_b[start:start + step] if task.has_text_b else None
        enc = tokenizer(a, b, truncation=True, max_length=max_len, padding=False,
                        return_attention_mask=False)
        if has_tt is None:
            has_tt = "token_type_ids" in enc
        for i, ids in enumerate(enc["input_ids"]):
            seq = enc.sequence_ids(i) if enc.is_fast else _slow_sequence_ids(ids, enc, i)
            ids_l.append(np.asarray(ids, dtype=np.int32))
            seg_l.append(np.asarray([SEG_SPECIAL if s is None else s for s in seq], dtype=np.int8))
            if has_tt:
                tt_l.append(np.asarray(enc["token_type_ids"][i], dtype=np.int8))
            lens.append(len(ids))
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    labels, groups = encode_labels(task, raw)
    return TokenizedSplit(task.name, raw.split, np.concatenate(ids_l), np.concatenate(tt_l) if has_tt else None,
                          np.concatenate(seg_l), offsets, labels, groups, list(raw.ids))


def _slow_sequence_ids(ids, enc, i):  # pragma: no cover - mtdnn asks for fast tokenizers
    tt = enc.get("token_type_ids")
    return list(tt[i]) if tt is not None else [0] * len(ids)


def _save(path: Path, tok: TokenizedSplit) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(ids=tok.ids, seg=tok.seg, offsets=tok.offsets, labels=tok.labels, groups=tok.groups)
    if tok.type_ids is not None:
        arrays["type_ids"] = tok.type_ids
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def _load(path: Path, task: TaskDef, raw: RawSplit) -> TokenizedSplit:
    with np.load(path, allow_pickle=False) as z:
        tt = z["type_ids"] if "type_ids" in z.files else None
        out = TokenizedSplit(task.name, raw.split, z["ids"], tt, z["seg"], z["offsets"], z["labels"],
                             z["groups"], list(raw.ids))
    if len(out) != len(raw):
        raise ValueError("row count differs from the data")
    return out
