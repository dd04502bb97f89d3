"""Tests of the text data layer: downloads, Multi30k loading, tokenizer, vocab, batches.

No network: downloads use ``file://`` URLs or a monkeypatched ``urlopen``; Multi30k is
the synthetic stand-in written into ``tmp_path`` and read through the real loader.
"""

from __future__ import annotations

import tempfile
import gzip
import importlib
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from course.data import (
    MULTI30K_SHA256,
    DataError,
    TranslationBatch,
    Vocab,
    collate_translation,
    data_dir,
    detokenize,
    encode_pairs,
    fetch,
    load_multi30k,
    make_batches,
    multi30k_url,
    sha256sum,
    synthetic_multi30k_root,
    tokenize,
    write_synthetic_multi30k,
)
from course.data import download as download_file

# `course.data.download` the attribute is the function; the module is here:
download_mod = importlib.import_module("course.data.download")
multi30k_mod = importlib.import_module("course.data.multi30k")

LANGS = ("en", "de", "fr")
SPLITS = ("train", "val", "test_2016_flickr")


def _no_partials(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix in (".part", ".tmp")]


def _offline(*args, **kwargs):
    raise urllib.error.URLError(OSError(101, "Network is unreachable"))


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return write_synthetic_multi30k(root, n_train=300, n_val=40, n_test=30, seed=0)


# ---------------------------------------------------------------------------- download


def test_data_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("COURSE_DATA_DIR")
    assert data_dir() == Path.home() / ".cache" / "course"


def test_download_file_url_verifies_and_is_atomic(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello course\n" * 1000)
    good = sha256sum(src)
    assert good == "f18090331c34db28388d888c873e346237b44be68edb677abdb4fb4ec3d2b83f"
    dest = tmp_path / "out" / "sub" / "copy.bin"
    got = download_file(src.as_uri(), dest, good, progress=False)
    assert got == dest and dest.read_bytes() == src.read_bytes()
    assert _no_partials(tmp_path) == []


def test_download_checksum_mismatch_deletes_and_names_hashes(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"some bytes")
    wrong = "0" * 64
    dest = tmp_path / "out" / "data.gz"
    with pytest.raises(DataError) as exc:
        download_file(src.as_uri(), dest, wrong, progress=False)
    msg = str(exc.value)
    assert "data.gz" in msg and wrong in msg and sha256sum(src) in msg
    assert not dest.exists()
    assert not (tmp_path / "out").exists()  # no temp file left, nor the folder made for it


def test_download_offline_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(download_mod.urllib.request, "urlopen", _offline)
    dest = tmp_path / "multi30k" / "train.de.gz"
    url = "https://example.invalid/train.de.gz"
    with pytest.raises(DataError) as exc:
        download_file(url, dest, None, progress=False)
    msg = str(exc.value)
    assert url in msg and str(dest) in msg and "COURSE_DATA_DIR" in msg
    assert not (tmp_path / "multi30k").exists()  # no empty folder left behind
    (tmp_path / "multi30k").mkdir()
    (tmp_path / "multi30k" / "other.gz").write_bytes(b"x")
    with pytest.raises(DataError):
        download_file(url, dest, None, progress=False)
    assert [p.name for p in (tmp_path / "multi30k").iterdir()] == ["other.gz"]  # existing folder kept


def test_fetch_reuses_verified_and_refuses_corrupt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "sets" / "a.txt"
    f.parent.mkdir()
    f.write_text("abc")
    sha = sha256sum(f)
    monkeypatch.setattr(download_mod.urllib.request, "urlopen", _offline)  # must not download
    assert fetch("sets/a.txt", "https://example.invalid/a.txt", sha, root=tmp_path) == f
    with pytest.raises(DataError, match="checksum is wrong") as exc:
        fetch("sets/a.txt", "https://example.invalid/a.txt", "f" * 64, root=tmp_path)
    assert str(f) in str(exc.value) and sha in str(exc.value)
    assert f.read_text() == "abc"  # neither deleted nor overwritten
    with pytest.raises(DataError, match="download=False"):
        fetch("sets/missing.txt", "https://example.invalid/m.txt", None, root=tmp_path, download=False)


def test_fetch_downloads_missing(tmp_path: Path) -> None:
    src = tmp_path / "remote.txt"
    src.write_text("payload")
    path = fetch("cache/remote.txt", src.as_uri(), sha256sum(src), root=tmp_path / "root")
    assert path == tmp_path / "root" / "cache" / "remote.txt" and path.read_text() == "payload"


# ---------------------------------------------------------------------------- multi30k


def test_multi30k_urls_and_hashes() -> None:
    assert multi30k_url("test", "de").endswith("/data/task1/raw/test_2016_flickr.de.gz")
    assert multi30k_url("train", "en").startswith("https://raw.githubusercontent.com/multi30k/dataset/master/")
    assert sorted(MULTI30K_SHA256) == sorted(f"{s}.{lang}.gz" for s in SPLITS for lang in LANGS)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in MULTI30K_SHA256.values())
    with pytest.raises(ValueError, match="unknown split"):
        multi30k_url("training", "en")
    with pytest.raises(ValueError, match="unknown language"):
        multi30k_url("train", "es")


def test_multi30k_offline_error_through_loader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(download_mod.urllib.request, "urlopen", _offline)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as exc:
        load_multi30k("val", "de", "en")
    msg = str(exc.value)
    assert multi30k_url("val", "de") in msg
    assert str(tmp_path / "multi30k" / "val.de.gz") in msg
    assert "COURSE_DATA_DIR" in msg
    assert _no_partials(tmp_path) == []


def test_synthetic_layout_and_loader(synth_root: Path) -> None:
    for split, n in zip(SPLITS, (300, 40, 30)):
        for lang in LANGS:
            f = synth_root / "multi30k" / f"{split}.{lang}.gz"
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                assert len(fh.read().splitlines()) == n
        for src, tgt in (("de", "en"), ("en", "fr")):
            pairs = load_multi30k(split, src, tgt, root=synth_root, download=False, verify=False)
            assert len(pairs) == n
            for s, t in pairs:
                assert s == s.strip() and s and t
                assert s[0].isupper() and t[0].isupper() and s.endswith(".") and t.endswith(".")
    train = load_multi30k("train", "en", "de", root=synth_root, download=False, verify=False)
    n_words = [sum(1 for w in tokenize(e) if w.isalpha()) for e, _ in train]
    assert min(n_words) >= 4 and max(n_words) <= 12
    assert load_multi30k("test", root=synth_root, download=False, verify=False) == load_multi30k(
        "test_2016_flickr", root=synth_root, download=False, verify=False
    )


def test_synthetic_is_a_consistent_translation(synth_root: Path) -> None:
    """Each English word always maps to the same German word in the same slot (learnable)."""
    pairs = load_multi30k("train", "en", "de", root=synth_root, download=False, verify=False)
    en_vocab = Vocab.build((tokenize(e) for e, _ in pairs), min_freq=1)
    de_vocab = Vocab.build((tokenize(d) for _, d in pairs), min_freq=1)
    assert 40 < len(en_vocab) < 120 and 40 < len(de_vocab) < 120  # small closed vocabulary
    verbs = {"runs": "läuft", "holds": "hält", "sleeps": "schläft"}
    seen = 0
    for e, d in pairs:
        for en_w, de_w in verbs.items():
            if en_w in tokenize(e):
                assert de_w in tokenize(d), (e, d)
                seen += 1
    assert seen > 20
    # French puts the adjective after the noun
    fr = load_multi30k("train", "en", "fr", root=synth_root, download=False, verify=False)
    hits = [tokenize(f) for e, f in fr if "black" in tokenize(e)]
    assert len(hits) > 5
    for ft in hits:
        k = next(i for i, w in enumerate(ft) if w in ("noir", "noire"))
        assert ft[k - 1] not in ("un", "une", "le", "la", ","), ft


def test_synthetic_deterministic(tmp_path: Path) -> None:
    a = write_synthetic_multi30k(tmp_path / "a", n_train=50, n_val=5, n_test=5, seed=3)
    b = write_synthetic_multi30k(tmp_path / "b", n_train=50, n_val=5, n_test=5, seed=3)
    c = write_synthetic_multi30k(tmp_path / "c", n_train=50, n_val=5, n_test=5, seed=4)
    for name in ("train.de.gz", "val.en.gz"):
        assert sha256sum(a / "multi30k" / name) == sha256sum(b / "multi30k" / name)
        assert sha256sum(a / "multi30k" / name) != sha256sum(c / "multi30k" / name)


def test_synthetic_fails_real_checksum_with_hint(synth_root: Path) -> None:
    with pytest.raises(DataError, match="verify=False"):
        load_multi30k("val", root=synth_root, download=False, verify=True)


def test_synthetic_root_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r1 = synthetic_multi30k_root(seed=0)
    assert r1.parent == tmp_path
    stamp = (r1 / "multi30k" / "train.en.gz").stat().st_mtime_ns
    r2 = synthetic_multi30k_root(seed=0)
    assert r2 == r1 and (r1 / "multi30k" / "train.en.gz").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [r1.name]  # temp folder was renamed away
    pairs = load_multi30k("val", synthetic=True)
    assert len(pairs) == 200 and pairs == load_multi30k("val", root=r1, verify=False, download=False)


def test_synthetic_root_concurrent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with ThreadPoolExecutor(4) as pool:
        roots = list(pool.map(lambda _: synthetic_multi30k_root(seed=1), range(4)))
    assert len(set(roots)) == 1 and [p.name for p in tmp_path.iterdir()] == [roots[0].name]
    assert len(load_multi30k("test", root=roots[0], verify=False, download=False)) == 200


def test_line_count_mismatch_names_both_files(tmp_path: Path) -> None:
    root = write_synthetic_multi30k(tmp_path, n_train=10, n_val=5, n_test=5)
    en = root / "multi30k" / "val.en.gz"
    with gzip.open(en, "wt", encoding="utf-8") as f:
        f.write("only one line.\n")
    with pytest.raises(DataError) as exc:
        load_multi30k("val", "de", "en", root=root, download=False, verify=False)
    msg = str(exc.value)
    assert "val.de.gz" in msg and "val.en.gz" in msg and "5" in msg and "1" in msg


def test_corrupt_gzip_names_file(tmp_path: Path) -> None:
    root = write_synthetic_multi30k(tmp_path, n_train=10, n_val=5, n_test=5)
    bad = root / "multi30k" / "train.fr.gz"
    bad.write_bytes(bad.read_bytes()[:20])  # truncated
    with pytest.raises(DataError, match="train.fr.gz"):
        load_multi30k("train", "en", "fr", root=root, download=False, verify=False)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a readable gzip"):
        load_multi30k("train", "en", "fr", root=root, download=False, verify=False)


# ---------------------------------------------------------------------------- tokenizer


def test_tokenize_examples() -> None:
    assert tokenize("A man's dog (black) runs, fast!") == [
        "A", "man's", "dog", "(", "black", ")", "runs", ",", "fast", "!",
    ]  # fmt: skip
    assert tokenize("Ein Mädchen läuft über die Straße.") == ["Ein", "Mädchen", "läuft", "über", "die", "Straße", "."]
    assert tokenize("l'homme a 3 chiens") == ["l'homme", "a", "3", "chiens"]
    assert tokenize("T-shirt_x") == ["T", "-", "shirt", "_", "x"]
    assert tokenize("  ") == []


@pytest.mark.parametrize(
    "s",
    [
        "A man in an orange hat is starring at something.",
        "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
        "Un homme (avec un chapeau) regarde: la mer, le ciel!",
        "Is it 3.5 or 4?",
    ],
)
def test_detokenize_round_trip(s: str) -> None:
    assert detokenize(tokenize(s)) == s


def test_detokenize_matches_sacrebleu_13a() -> None:
    tok13a = pytest.importorskip("sacrebleu.tokenizers.tokenizer_13a").Tokenizer13a()
    for s in [
        'He said "hi" (twice), then left; why?',
        "A T-shirt costs $5.50 at 10:30!",
        "Der Flugbegleiter_in zeigt, wie's geht.",
        "Un garçon l'a vu...",
        "It costs 1,000.50 or 3.5km.",
    ]:
        toks = tokenize(s)
        assert tok13a(detokenize(toks)).split() == toks, s


# ---------------------------------------------------------------------------- vocab


def test_vocab_specials_and_build() -> None:
    assert (Vocab.PAD, Vocab.UNK, Vocab.BOS, Vocab.EOS) == (0, 1, 2, 3)
    sents = [["a", "b", "b"], ["b", "c", "a"], ["d"]]
    v = Vocab.build(sents, min_freq=2)
    assert v.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "b", "a"]  # by frequency
    assert len(v) == 6 and v.stoi["a"] == 5 and "c" not in v
    assert Vocab.build(sents, min_freq=1).itos[4:] == ["b", "a", "c", "d"]  # ties alphabetical
    assert len(Vocab.build(sents, min_freq=1, max_size=5)) == 5
    with pytest.raises(TypeError, match="tokenize"):
        Vocab.build(["a b c"])
    with pytest.raises(ValueError, match="specials"):
        Vocab(["a", "b"])


def test_vocab_encode_decode(tmp_path: Path) -> None:
    v = Vocab.build([["the", "dog", "."]] * 2)
    ids = v.encode(["the", "cat", "."])
    assert ids[0] == Vocab.BOS and ids[-1] == Vocab.EOS and ids[2] == Vocab.UNK
    assert v.encode(["the"], add_bos_eos=False) == [v.stoi["the"]]
    assert v.decode(ids) == ["the", "<unk>", "."]
    seq = torch.tensor([Vocab.BOS, v.stoi["dog"], Vocab.EOS, v.stoi["the"], Vocab.PAD])
    assert v.decode(seq) == ["dog"]  # stops at EOS
    assert v.decode(seq, strip_specials=False) == ["<bos>", "dog", "<eos>"]
    v.save(tmp_path / "v.json")
    w = Vocab.load(tmp_path / "v.json")
    assert w.itos == v.itos and w.stoi == v.stoi


# ---------------------------------------------------------------------------- batches


def test_collate_pads() -> None:
    b = collate_translation([([2, 5, 3], [2, 7, 8, 9, 3]), ([2, 6, 6, 6, 3], [2, 4, 3])])
    assert isinstance(b, TranslationBatch) and len(b) == 2
    assert b.src.dtype == torch.long and b.src.shape == (2, 5) and b.tgt.shape == (2, 5)
    assert b.src[0].tolist() == [2, 5, 3, 0, 0]
    assert b.tgt[1].tolist() == [2, 4, 3, 0, 0]
    assert b.src_lengths.tolist() == [3, 5]
    assert b.src_pad_mask[0].tolist() == [False, False, False, True, True]
    assert b.tgt_in[0].tolist() == [2, 7, 8, 9] and b.tgt_out[0].tolist() == [7, 8, 9, 3]
    assert b.num_tgt_tokens == 4 + 2
    assert torch.equal(b.to("cpu").src, b.src)


@pytest.fixture(scope="module")
def encoded(synth_root: Path) -> list[tuple[list[int], list[int]]]:
    pairs = load_multi30k("train", "de", "en", root=synth_root, download=False, verify=False)
    sv = Vocab.build(tokenize(s) for s, _ in pairs)
    tv = Vocab.build(tokenize(t) for _, t in pairs)
    enc = encode_pairs(pairs, sv, tv)
    assert len(enc) == len(pairs)
    assert enc[0][1] == tv.encode(tokenize(pairs[0][1]))
    assert detokenize(tv.decode(enc[0][1])) == pairs[0][1]
    return enc


def _epoch(loader) -> list[tuple[list[int], list[int]]]:
    out = []
    for b in loader:
        for s, t in zip(b.src.tolist(), b.tgt.tolist()):
            out.append((s, t))
    return out


def _unpad(row: list[int]) -> list[int]:
    return row[: row.index(Vocab.EOS) + 1]


def test_encode_pairs_max_len(encoded) -> None:
    pairs = [("a b c", "x"), ("a", "x y z w")]
    v = Vocab.build([["a", "b", "c", "x", "y", "z", "w"]] * 2)
    assert len(encode_pairs(pairs, v, v, max_len=3)) == 1
    assert len(encode_pairs(pairs, v, v)) == 2


def test_make_batches_covers_everything_padded(encoded) -> None:
    loader = make_batches(encoded, batch_size=32, shuffle=True, seed=0)
    assert len(loader) == -(-len(encoded) // 32)
    batches = list(loader)
    assert len(batches) == len(loader)
    seen = []
    for b in batches:
        assert b.src.size(0) <= 32 and b.src.size(0) == b.tgt.size(0)
        assert (b.src[:, 0] == Vocab.BOS).all() and (b.tgt[:, 0] == Vocab.BOS).all()
        # padding only after EOS, and at least one row uses the full width
        for m in (b.src, b.tgt):
            is_eos = m == Vocab.EOS
            assert (is_eos.sum(1) == 1).all()
            after = is_eos.long().cumsum(1).bool() & ~is_eos
            assert (m[after] == Vocab.PAD).all() and (m[~after] != Vocab.PAD).all()
            assert is_eos[:, -1].any()
        seen += [(_unpad(s), _unpad(t)) for s, t in zip(b.src.tolist(), b.tgt.tolist())]
    assert sorted(seen) == sorted(encoded)


def test_make_batches_deterministic_and_bucketed(encoded) -> None:
    a = make_batches(encoded, batch_size=16, seed=1)
    b = make_batches(encoded, batch_size=16, seed=1)
    a1, a2 = _epoch(a), _epoch(a)
    assert a1 == _epoch(b) and a2 == _epoch(b)  # same seed, same epochs
    assert a1 != a2  # epochs differ
    assert a1 != _epoch(make_batches(encoded, batch_size=16, seed=2))
    # bucketing: much less padding than batches in random order
    pad_bucket = sum(int((x.src == Vocab.PAD).sum()) for x in a)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(encoded), generator=g).tolist()
    pad_random = sum(
        int((collate_translation([encoded[i] for i in perm[k : k + 16]]).src == Vocab.PAD).sum())
        for k in range(0, len(perm), 16)
    )
    assert pad_bucket < 0.5 * pad_random


def test_make_batches_in_order_and_token_budget(encoded) -> None:
    ordered = make_batches(encoded, batch_size=7, shuffle=False)
    assert [(_unpad(s), _unpad(t)) for s, t in _epoch(ordered)] == encoded
    budget = 200
    loader = make_batches(encoded, tokens_per_batch=budget, seed=0)
    sizes = []
    for _ in range(2):
        n = 0
        for b in loader:
            assert b.src.numel() <= budget and b.tgt.numel() <= budget
            n += 1
        sizes.append(n)
    assert sizes == [len(loader)] * 2 and len(loader) > len(encoded) * 10 // budget
    with pytest.raises(ValueError, match="empty"):
        make_batches([], batch_size=4)


def test_every_exported_data_name_resolves():
    import course.data

    missing = [n for n in course.data.__all__ if not hasattr(course.data, n)]
    assert not missing, f"course.data.__all__ names that do not resolve: {missing}"
