"""Text pipeline for translation: tokenizer, vocabulary, padded batches.

    sentence --tokenize--> tokens --Vocab.encode--> ids [BOS, ..., EOS]
    pairs of ids --make_batches--> TranslationBatch(src: Tensor[B, S], tgt: Tensor[B, T])

Everything is small and CPU-cheap on purpose: the quick profile builds vocabularies and
batches of the synthetic corpus in milliseconds.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "tokenize",
    "detokenize",
    "Vocab",
    "TranslationBatch",
    "collate_translation",
    "encode_pairs",
    "make_batches",
    "LengthBucketSampler",
]

# A number may contain "." or "," between digits ("3.5", "1,000"); a word is a run of
# letters/digits (any script) that may contain apostrophes between letters ("don't",
# "l'homme"); any other non-space character, "_" included, is a token by itself. These are
# the splits of sacrebleu's 13a tokenizer.
_TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:['\u2019][^\W_]+)*|\S")
_NO_SPACE_BEFORE = frozenset(".,!?;:)")
_NO_SPACE_AFTER = frozenset("(")


def tokenize(s: str) -> list[str]:
    """Split a sentence into words and punctuation tokens, keeping case.

    >>> tokenize("A man's dog (black) runs 3.5 km, fast!")
    ['A', "man's", 'dog', '(', 'black', ')', 'runs', '3.5', 'km', ',', 'fast', '!']
    """
    return _TOKEN_RE.findall(s)


def detokenize(tokens: Iterable[str]) -> str:
    """Join tokens into a sentence: spaces between tokens, except before ``.,!?;:)``
    and after ``(``.

    sacrebleu's default ``13a`` tokenizer splits the result back into the same tokens,
    so BLEU on detokenized strings matches BLEU on the token lists.

    >>> detokenize(['A', 'dog', '(', 'black', ')', 'runs', '.'])
    'A dog (black) runs.'
    """
    out: list[str] = []
    prev = ""
    for tok in tokens:
        if out and tok not in _NO_SPACE_BEFORE and prev not in _NO_SPACE_AFTER:
            out.append(" ")
        out.append(tok)
        prev = tok
    return "".join(out)


class Vocab:
    """Bidirectional token <-> id map with four special tokens at fixed ids.

    Attributes:
        itos: list of tokens; ``itos[i]`` is the token with id ``i``.
        stoi: dict from token to id; unknown tokens map to :attr:`UNK` in :meth:`encode`.
    """

    PAD = 0  # padding, ignored by losses and attention masks
    UNK = 1  # token not in the vocabulary
    BOS = 2  # begin of sentence: first decoder input
    EOS = 3  # end of sentence: last target, stops decoding
    SPECIALS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>", "<eos>")

    def __init__(self, itos: Sequence[str]) -> None:
        itos = list(itos)
        if tuple(itos[: len(self.SPECIALS)]) != self.SPECIALS:
            raise ValueError(
                f"Vocab: the first tokens must be the specials {list(self.SPECIALS)}, "
                f"got {itos[: len(self.SPECIALS)]}"
            )
        if len(set(itos)) != len(itos):
            dup = [t for t, c in Counter(itos).items() if c > 1]
            raise ValueError(f"Vocab: duplicate tokens {dup[:10]}")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(itos)}

    @classmethod
    def build(
        cls,
        sentences_tokens: Iterable[Sequence[str]],
        min_freq: int = 2,
        max_size: int | None = None,
    ) -> Vocab:
        """Vocabulary of the tokens seen at least ``min_freq`` times.

        Tokens are ordered by decreasing frequency, ties alphabetically, so the result is
        deterministic. ``max_size`` caps the total size, specials included.
        """
        if min_freq < 1:
            raise ValueError(f"Vocab.build: min_freq must be >= 1, got {min_freq}")
        n_special = len(cls.SPECIALS)
        if max_size is not None and max_size < n_special:
            raise ValueError(f"Vocab.build: max_size must be >= {n_special} (the specials), got {max_size}")
        counts: Counter[str] = Counter()
        for toks in sentences_tokens:
            if isinstance(toks, str):
                raise TypeError("Vocab.build expects token lists, got a str: call tokenize() first")
            counts.update(toks)
        for s in cls.SPECIALS:
            counts.pop(s, None)
        words = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            words = words[: max_size - n_special]
        return cls(list(cls.SPECIALS) + words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, first={self.itos[4:9]})"

    def encode(self, tokens: Sequence[str], add_bos_eos: bool = True) -> list[int]:
        """Token ids; unknown tokens become :attr:`UNK`; wrapped in BOS ... EOS by default."""
        if isinstance(tokens, str):
            raise TypeError("Vocab.encode expects a token list, got a str: call tokenize() first")
        ids = [self.stoi.get(t, self.UNK) for t in tokens]
        return [self.BOS, *ids, self.EOS] if add_bos_eos else ids

    def decode(self, ids: Iterable[int] | torch.Tensor, strip_specials: bool = True) -> list[str]:
        """Tokens of ``ids`` up to the first EOS.

        With ``strip_specials`` (default) PAD, BOS and the EOS are dropped (UNK is kept,
        as ``<unk>``); without it every token up to and including the first EOS is kept.
        Accepts a list of ints or a 1-D tensor.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"Vocab.decode expects a 1-D tensor of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        out: list[str] = []
        for i in ids:
            i = int(i)
            if i == self.EOS:
                if not strip_specials:
                    out.append(self.itos[i])
                break
            if strip_specials and i in (self.PAD, self.BOS):
                continue
            if not 0 <= i < len(self.itos):
                raise IndexError(f"Vocab.decode: id {i} out of range for a vocabulary of size {len(self)}")
            out.append(self.itos[i])
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the vocabulary as a JSON list of tokens (``itos``)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.itos, f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocab:
        """Read a vocabulary written by :meth:`save`."""
        with open(path, encoding="utf-8") as f:
            itos = json.load(f)
        if not isinstance(itos, list) or not all(isinstance(t, str) for t in itos):
            raise ValueError(f"{os.fspath(path)!r}: expected a JSON list of token strings")
        return cls(itos)


@dataclass
class TranslationBatch:
    """A padded batch of sentence pairs.

    Attributes:
        src: LongTensor[B, S], source ids ``BOS ... EOS`` right-padded with ``Vocab.PAD``.
        tgt: LongTensor[B, T], target ids ``BOS ... EOS`` right-padded with ``Vocab.PAD``.
            Teacher forcing feeds ``tgt_in = tgt[:, :-1]`` and predicts ``tgt_out = tgt[:, 1:]``.
    """

    src: torch.Tensor
    tgt: torch.Tensor

    @property
    def tgt_in(self) -> torch.Tensor:
        """Decoder input ``tgt[:, :-1]``: LongTensor[B, T-1] (starts with BOS)."""
        return self.tgt[:, :-1]

    @property
    def tgt_out(self) -> torch.Tensor:
        """Decoder target ``tgt[:, 1:]``: LongTensor[B, T-1] (ends with EOS, then PAD)."""
        return self.tgt[:, 1:]

    @property
    def src_pad_mask(self) -> torch.Tensor:
        """BoolTensor[B, S], True at padding positions of ``src``."""
        return self.src == Vocab.PAD

    @property
    def src_lengths(self) -> torch.Tensor:
        """LongTensor[B], number of non-pad source tokens per sentence (BOS and EOS included)."""
        return (self.src != Vocab.PAD).sum(dim=1)

    @property
    def num_tgt_tokens(self) -> int:
        """Number of non-pad tokens in ``tgt_out``: the denominator of a per-token loss."""
        return int((self.tgt_out != Vocab.PAD).sum())

    def __len__(self) -> int:
        return self.src.size(0)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TranslationBatch:
        """A copy with both tensors on ``device``."""
        return TranslationBatch(
            src=self.src.to(device, non_blocking=non_blocking),
            tgt=self.tgt.to(device, non_blocking=non_blocking),
        )


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """LongTensor[B, max_len] of ``seqs`` right-padded with ``pad_id``."""
    longest = max(len(s) for s in seqs)
    out = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate_translation(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int = Vocab.PAD
) -> TranslationBatch:
    """Pad a list of ``(src_ids, tgt_ids)`` (already with BOS/EOS) into a :class:`TranslationBatch`."""
    if len(pairs) == 0:
        raise ValueError("collate_translation: got an empty list of pairs")
    for k, (s, t) in enumerate(pairs):
        if len(s) == 0 or len(t) == 0:
            raise ValueError(f"collate_translation: pair {k} has an empty sequence (src {len(s)}, tgt {len(t)} ids)")
    return TranslationBatch(src=_pad([p[0] for p in pairs], pad_id), tgt=_pad([p[1] for p in pairs], pad_id))


def encode_pairs(
    pairs: Iterable[tuple[str | Sequence[str], str | Sequence[str]]],
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    max_len: int | None = None,
) -> list[tuple[list[int], list[int]]]:
    """Encode sentence pairs to ``(src_ids, tgt_ids)``, each ``BOS ... EOS``.

    Sentences may be strings (tokenized with :func:`tokenize`) or token lists. With
    ``max_len``, pairs where either side has more than ``max_len`` tokens (BOS/EOS not
    counted) are dropped: use it for training, not for evaluation against references.
    """
    out: list[tuple[list[int], list[int]]] = []
    for src, tgt in pairs:
        s = tokenize(src) if isinstance(src, str) else list(src)
        t = tokenize(tgt) if isinstance(tgt, str) else list(tgt)
        if max_len is not None and (len(s) > max_len or len(t) > max_len):
            continue
        out.append((src_vocab.encode(s), tgt_vocab.encode(t)))
    return out


class _ListDataset(Dataset):
    """Map-style dataset over an in-memory list."""

    def __init__(self, items: Sequence[tuple[list[int], list[int]]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.items[i]


class LengthBucketSampler(Sampler[list[int]]):
    """Batch sampler that groups pairs of similar length to reduce padding.

    With ``shuffle``, each epoch randomly permutes the pairs, stably sorts them by
    ``max(len(src), len(tgt))`` (so equal lengths are mixed randomly), cuts the sorted list
    into batches, and shuffles the order of the batches. Epoch ``e`` uses the generator
    seed ``seed + e``; the epoch counter advances on each ``iter()``, or is set with
    :meth:`set_epoch`. Without ``shuffle`` the pairs keep their original order (so
    outputs line up with references) and are cut into consecutive batches.

    Batches hold ``batch_size`` pairs, or, with ``tokens_per_batch``, as many pairs as
    fit ``n_pairs * longest <= tokens_per_batch`` (at least one). The number of batches
    is the same in every epoch, so ``len()`` is exact.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int | None = 64,
        shuffle: bool = True,
        seed: int = 0,
        tokens_per_batch: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if tokens_per_batch is None and (batch_size is None or batch_size < 1):
            raise ValueError(f"LengthBucketSampler: batch_size must be >= 1, got {batch_size}")
        if tokens_per_batch is not None and tokens_per_batch < 1:
            raise ValueError(f"LengthBucketSampler: tokens_per_batch must be >= 1, got {tokens_per_batch}")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.tokens_per_batch = tokens_per_batch
        self.drop_last = drop_last
        self.epoch = 0
        self._len = len(self._batches(0))

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch``."""
        self.epoch = epoch

    def _order(self, epoch: int) -> list[int]:
        n = len(self.lengths)
        if not self.shuffle:
            return list(range(n))
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(n, generator=g)
        by_len = torch.sort(self.lengths[perm], stable=True).indices
        return perm[by_len].tolist()

    def _batches(self, epoch: int) -> list[list[int]]:
        order = self._order(epoch)
        lengths = self.lengths.tolist()
        batches: list[list[int]] = []
        cur: list[int] = []
        longest = 0
        for i in order:
            if self.tokens_per_batch is not None:
                new_longest = max(longest, lengths[i])
                if cur and (len(cur) + 1) * new_longest > self.tokens_per_batch:
                    batches.append(cur)
                    cur, new_longest = [], lengths[i]
                cur.append(i)
                longest = new_longest
            else:
                cur.append(i)
                if len(cur) == self.batch_size:
                    batches.append(cur)
                    cur = []
        if cur and not self.drop_last:
            batches.append(cur)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.epoch)
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return self._len


def make_batches(
    encoded: Sequence[tuple[list[int], list[int]]],
    batch_size: int = 64,
    shuffle: bool = True,
    seed: int = 0,
    tokens_per_batch: int | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A re-iterable loader of :class:`TranslationBatch` over encoded pairs.

    Args:
        encoded: ``(src_ids, tgt_ids)`` pairs from :func:`encode_pairs`.
        batch_size: pairs per batch (ignored when ``tokens_per_batch`` is given).
        shuffle: length-bucketed random batches, different each epoch (see
            :class:`LengthBucketSampler`); False keeps the original order.
        seed: base seed; the same seed gives the same sequence of epochs.
        tokens_per_batch: cap on ``n_pairs * longest_sentence`` per batch instead of a
            fixed ``batch_size``.
        drop_last: drop the last, smaller batch.

    Each batch: ``src`` LongTensor[B, S], ``tgt`` LongTensor[B, T], both padded with PAD.
    ``len(loader)`` is the number of batches per epoch. Runs in the main process.
    """
    if len(encoded) == 0:
        raise ValueError("make_batches: no pairs to batch (empty `encoded`; was max_len too small?)")
    sampler = LengthBucketSampler(
        [max(len(s), len(t)) for s, t in encoded],
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        tokens_per_batch=tokens_per_batch,
        drop_last=drop_last,
    )
    return DataLoader(_ListDataset(encoded), batch_sampler=sampler, collate_fn=collate_translation)
