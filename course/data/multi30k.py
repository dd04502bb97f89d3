"""Multi30k (task 1) sentence pairs, and a synthetic stand-in in the same file layout.

Real data: the raw, untokenized files of https://github.com/multi30k/dataset
(``data/task1/raw/{split}.{lang}.gz``), stored as ``<root>/multi30k/{split}.{lang}.gz``
and checked against their SHA-256. Splits: ``train`` (29,000 pairs), ``val`` (1,014),
``test_2016_flickr`` (1,000); languages ``en``, ``de``, ``fr``, aligned line by line.

Synthetic data: :func:`write_synthetic_multi30k` writes the same nine gzip files with a
tiny English-like language (``A small dog runs on the beach.``) and dictionary
translations into German (nouns capitalised, der/die/das by gender and case, verb second
after a fronted phrase) and French (adjective after the noun, le/la/l' by gender). A small
transformer learns it in a few hundred steps; tests and the quick profile read it through
the same :func:`load_multi30k` code as the real files.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import zlib
from pathlib import Path

from .download import DataError, cached_root, fetch

__all__ = [
    "MULTI30K_SPLITS",
    "MULTI30K_LANGS",
    "MULTI30K_SHA256",
    "multi30k_url",
    "load_multi30k",
    "write_synthetic_multi30k",
    "synthetic_multi30k_root",
]

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{split}.{lang}.gz"
MULTI30K_SPLITS: tuple[str, ...] = ("train", "val", "test_2016_flickr")
MULTI30K_LANGS: tuple[str, ...] = ("en", "de", "fr")
_SPLIT_ALIASES = {"test": "test_2016_flickr", "valid": "val", "validation": "val", "dev": "val"}
_SUBDIR = "multi30k"

# SHA-256 of the real files, keyed by "{split}.{lang}.gz".
MULTI30K_SHA256: dict[str, str] = {
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
}


def _canonical_split(split: str) -> str:
    split = _SPLIT_ALIASES.get(split, split)
    if split not in MULTI30K_SPLITS:
        raise ValueError(
            f"multi30k: unknown split {split!r}; expected one of {list(MULTI30K_SPLITS)} "
            f"(or the aliases {sorted(_SPLIT_ALIASES)})"
        )
    return split


def _check_lang(lang: str) -> str:
    if lang not in MULTI30K_LANGS:
        raise ValueError(f"multi30k: unknown language {lang!r}; expected one of {list(MULTI30K_LANGS)}")
    return lang


def multi30k_url(split: str, lang: str) -> str:
    """Download URL of one raw Multi30k file."""
    return MULTI30K_URL.format(split=_canonical_split(split), lang=_check_lang(lang))


def _read_lines(path: Path) -> list[str]:
    """Stripped lines of a gzip text file; a corrupt file raises :class:`DataError`."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        raise DataError(
            f"{str(path)!r} is not a readable gzip file of UTF-8 text ({type(err).__name__}: {err}); "
            f"delete it and load again to re-download (or rewrite the synthetic copy)."
        ) from err
    lines = text.split("\n")  # not splitlines(): it also splits on \x1c, \u2028, ...
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def load_multi30k(
    split: str,
    src: str = "de",
    tgt: str = "en",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    verify: bool = True,
    synthetic: bool = False,
) -> list[tuple[str, str]]:
    """Aligned ``(source, target)`` sentence pairs of one Multi30k split.

    Args:
        split: ``"train"``, ``"val"`` or ``"test_2016_flickr"`` (alias ``"test"``).
        src, tgt: languages, each of ``"en"``, ``"de"``, ``"fr"``.
        root: data folder holding ``multi30k/{split}.{lang}.gz``; default
            :func:`course.data.download.data_dir` (``$COURSE_DATA_DIR`` or ``~/.cache/course``).
        download: download missing files (else a missing file is a :class:`DataError`).
        verify: check each file against the SHA-256 of the real data set. Pass False for
            files written by :func:`write_synthetic_multi30k`.
        synthetic: read the synthetic stand-in instead: ``root`` defaults to
            :func:`synthetic_multi30k_root`, nothing is downloaded or verified.

    Returns:
        list of ``(src_sentence, tgt_sentence)``, whitespace-stripped, in file order.

    Raises:
        DataError: a file is missing offline, has the wrong checksum, is not valid gzip,
            or the two files have different numbers of lines.
    """
    split = _canonical_split(split)
    _check_lang(src)
    _check_lang(tgt)
    if synthetic:
        root = synthetic_multi30k_root() if root is None else root
        download, verify = False, False
    paths = []
    for lang in (src, tgt):
        name = f"{split}.{lang}.gz"
        sha = MULTI30K_SHA256[name] if verify else None
        try:
            paths.append(fetch(f"{_SUBDIR}/{name}", multi30k_url(split, lang), sha, root=root, download=download))
        except DataError as err:
            if verify and "checksum" in str(err):
                raise DataError(
                    f"{err}\n(multi30k: if this folder holds the synthetic stand-in from "
                    f"write_synthetic_multi30k, load it with verify=False.)"
                ) from err
            raise
    src_lines, tgt_lines = _read_lines(paths[0]), _read_lines(paths[1])
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"multi30k {split}: {str(paths[0])!r} has {len(src_lines)} lines but "
            f"{str(paths[1])!r} has {len(tgt_lines)}; the files must be aligned line by line."
        )
    return list(zip(src_lines, tgt_lines))


# ---------------------------------------------------------------------------------------
# Synthetic stand-in
# ---------------------------------------------------------------------------------------

# Nouns that can be subjects (animate) or objects: en, (de, gender), (fr, gender).
_ANIMATE = [
    ("man", ("Mann", "m"), ("homme", "m")),
    ("woman", ("Frau", "f"), ("femme", "f")),
    ("boy", ("Junge", "m"), ("garçon", "m")),
    ("girl", ("Mädchen", "n"), ("fille", "f")),
    ("child", ("Kind", "n"), ("enfant", "m")),
    ("dog", ("Hund", "m"), ("chien", "m")),
    ("cat", ("Katze", "f"), ("chat", "m")),
    ("horse", ("Pferd", "n"), ("cheval", "m")),
    ("worker", ("Arbeiter", "m"), ("ouvrier", "m")),
    ("player", ("Spieler", "m"), ("joueur", "m")),
]
_THINGS = [
    ("ball", ("Ball", "m"), ("ballon", "m")),
    ("bicycle", ("Fahrrad", "n"), ("vélo", "m")),
    ("book", ("Buch", "n"), ("livre", "m")),
    ("guitar", ("Gitarre", "f"), ("guitare", "f")),
    ("bag", ("Tasche", "f"), ("sac", "m")),
    ("hat", ("Hut", "m"), ("chapeau", "m")),
]
_PLACES = [
    ("street", ("Straße", "f"), ("rue", "f")),
    ("beach", ("Strand", "m"), ("plage", "f")),
    ("park", ("Park", "m"), ("parc", "m")),
    ("field", ("Feld", "n"), ("champ", "m")),
    ("garden", ("Garten", "m"), ("jardin", "m")),
    ("house", ("Haus", "n"), ("maison", "f")),
    ("bridge", ("Brücke", "f"), ("pont", "m")),
    ("car", ("Auto", "n"), ("voiture", "f")),
]
# Adjectives: en, de (one form), (fr masculine, fr feminine).
_ADJECTIVES = [
    ("small", "kleine", ("petit", "petite")),
    ("big", "große", ("grand", "grande")),
    ("black", "schwarze", ("noir", "noire")),
    ("white", "weiße", ("blanc", "blanche")),
    ("red", "rote", ("rouge", "rouge")),
    ("young", "junge", ("jeune", "jeune")),
    ("old", "alte", ("vieux", "vieille")),
    ("happy", "glückliche", ("heureux", "heureuse")),
    ("brown", "braune", ("brun", "brune")),
    ("green", "grüne", ("vert", "verte")),
]
_INTRANSITIVE = [
    ("runs", "läuft", "court"),
    ("sleeps", "schläft", "dort"),
    ("jumps", "springt", "saute"),
    ("plays", "spielt", "joue"),
    ("waits", "wartet", "attend"),
    ("smiles", "lächelt", "sourit"),
    ("walks", "geht", "marche"),
]
_TRANSITIVE = [
    ("holds", "hält", "tient"),
    ("watches", "beobachtet", "regarde"),
    ("carries", "trägt", "porte"),
    ("throws", "wirft", "lance"),
    ("finds", "findet", "trouve"),
    ("pulls", "zieht", "tire"),
]
# Prepositions (German ones take the dative here).
_PREPOSITIONS = [("on", "auf", "sur"), ("in", "in", "dans"), ("behind", "hinter", "derrière"), ("under", "unter", "sous")]

# German articles by (definite, case, gender); case: nom, acc, dat.
_DE_ART = {
    (True, "nom"): {"m": "der", "f": "die", "n": "das"},
    (True, "acc"): {"m": "den", "f": "die", "n": "das"},
    (True, "dat"): {"m": "dem", "f": "der", "n": "dem"},
    (False, "nom"): {"m": "ein", "f": "eine", "n": "ein"},
    (False, "acc"): {"m": "einen", "f": "eine", "n": "ein"},
    (False, "dat"): {"m": "einem", "f": "einer", "n": "einem"},
}

_Noun = tuple[str, tuple[str, str], tuple[str, str]]
_Adj = tuple[str, str, tuple[str, str]]


def _noun_phrase(definite: bool, adj: _Adj | None, noun: _Noun, case: str) -> tuple[list[str], list[str], list[str]]:
    """(en, de, fr) word lists of one noun phrase."""
    en_noun, (de_noun, de_g), (fr_noun, fr_g) = noun
    en = ["the" if definite else "a"] + ([adj[0]] if adj else []) + [en_noun]
    if en[0] == "a" and en[1][0] in "aeiou":
        en[0] = "an"
    de = [_DE_ART[(definite, case)][de_g]] + ([adj[1]] if adj else []) + [de_noun]
    if definite:
        fr_art = "l'" if fr_noun[0] in "aeiouhé" else ("le" if fr_g == "m" else "la")
    else:
        fr_art = "un" if fr_g == "m" else "une"
    fr_adj = [adj[2][0 if fr_g == "m" else 1]] if adj else []
    # French: adjective after the noun; "l'" is written attached to the noun.
    fr = [fr_art + fr_noun] if fr_art == "l'" else [fr_art, fr_noun]
    return en, de, fr + fr_adj


def _sentence(rng: random.Random) -> tuple[str, str, str]:
    """One random (en, de, fr) sentence triple."""

    def adj() -> _Adj | None:
        return rng.choice(_ADJECTIVES) if rng.random() < 0.5 else None

    s_en, s_de, s_fr = _noun_phrase(rng.random() < 0.5, adj(), rng.choice(_ANIMATE), "nom")
    if rng.random() < 0.5:
        v = rng.choice(_TRANSITIVE)
        o_en, o_de, o_fr = _noun_phrase(rng.random() < 0.5, adj(), rng.choice(_ANIMATE + _THINGS), "acc")
    else:
        v = rng.choice(_INTRANSITIVE)
        o_en, o_de, o_fr = [], [], []
    where = rng.random()  # < 0.25: fronted place phrase, < 0.6: trailing, else none
    if where < 0.6:
        p = rng.choice(_PREPOSITIONS)
        pn_en, pn_de, pn_fr = _noun_phrase(rng.random() < 0.7, adj(), rng.choice(_PLACES), "dat")
        pp_en, pp_de, pp_fr = [p[0], *pn_en], [p[1], *pn_de], [p[2], *pn_fr]
    else:
        pp_en = pp_de = pp_fr = []
    if where < 0.25:  # fronted: English/French add a comma, German puts the verb second
        en = [*pp_en, ",", *s_en, v[0], *o_en]
        de = [*pp_de, v[1], *s_de, *o_de]
        fr = [*pp_fr, ",", *s_fr, v[2], *o_fr]
    else:
        en = [*s_en, v[0], *o_en, *pp_en]
        de = [*s_de, v[1], *o_de, *pp_de]
        fr = [*s_fr, v[2], *o_fr, *pp_fr]

    def finish(words: list[str]) -> str:
        words[0] = words[0][:1].upper() + words[0][1:]
        return " ".join(words).replace(" ,", ",") + "."

    return finish(en), finish(de), finish(fr)


def _n_words(sentence: str) -> int:
    return sum(1 for w in sentence.split() if w.strip(",."))


def _write_gz_lines(path: Path, lines: list[str]) -> None:
    """Write ``lines`` as gzip UTF-8 text, byte-for-byte reproducible, atomically."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(("\n".join(lines) + "\n").encode("utf-8"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def write_synthetic_multi30k(
    root: str | os.PathLike[str],
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 200,
    seed: int = 0,
) -> Path:
    """Write a synthetic Multi30k into ``<root>/multi30k/{split}.{lang}.gz``; return ``root``.

    Same layout and format as the real files (gzip, UTF-8, one sentence per line, aligned
    across en/de/fr). Sentences have 4 to 12 words. Deterministic given ``seed``; each
    split uses its own random stream. Load it with ``load_multi30k(..., root=root,
    verify=False)``.
    """
    root = Path(root)
    out_dir = root / _SUBDIR
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val), ("test_2016_flickr", n_test)):
        if n < 1:
            raise ValueError(f"write_synthetic_multi30k: {split} needs at least 1 sentence, got {n}")
        rng = random.Random(f"multi30k-synthetic/{seed}/{split}")
        rows: list[tuple[str, str, str]] = []
        while len(rows) < n:
            row = _sentence(rng)
            if 4 <= _n_words(row[0]) <= 12:
                rows.append(row)
        for k, lang in enumerate(("en", "de", "fr")):
            _write_gz_lines(out_dir / f"{split}.{lang}.gz", [r[k] for r in rows])
    return root


_SYNTHETIC_VERSION = 1  # bump when the synthetic language changes, to invalidate caches


def synthetic_multi30k_root(seed: int = 0) -> Path:
    """Root of a cached synthetic Multi30k (default sizes) under the system temp dir.

    Written once per ``seed``; later calls return the cached copy. Safe when several
    processes race: each writes into its own temporary folder, which is renamed into
    place; a loser discards its copy.
    """
    files = [f"{_SUBDIR}/{s}.{lang}.gz" for s in MULTI30K_SPLITS for lang in MULTI30K_LANGS]
    return cached_root(f"course-multi30k-synthetic-v{_SYNTHETIC_VERSION}-seed{seed}", files,
                       lambda tmp: write_synthetic_multi30k(tmp, seed=seed))
