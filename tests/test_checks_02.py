"""The hidden checks of assignment 02 (autograder/checks/02_transformer_blocks.py), without a kernel.

- the checks module loads, and its checks cover the notebook's grade cells one to one:
  every grade cell has checks, exactly one of them mirrors the cell's visible asserts, and
  no check names a grade cell that does not exist;
- the source notebook keeps no hidden test code (only a pointer to the checks file);
- the trusted copies of the solution that the checks use for weights and gradients agree
  with PyTorch's modules (so a check never blames a student for a bug of its own).

The checks against real submissions run in ``tests/test_assignments.py::test_demo_end_to_end``.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import warnings

import pytest
import torch

import course.nn
from autograder.trusted import load_checks

ROOT = Path(__file__).resolve().parent.parent
AID = "02_transformer_blocks"
NOTEBOOK = ROOT / "source" / AID / f"{AID}.ipynb"


def _grade_cells() -> dict[str, nbformat.NotebookNode]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    out = {}
    for cell in nb.cells:
        md = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and md.get("grade") and not md.get("solution"):
            out[md["grade_id"]] = cell
    return out


@pytest.fixture(scope="module")
def checks():
    return load_checks(AID)


@pytest.fixture(scope="module")
def module():
    import sys

    load_checks(AID)
    return sys.modules[f"_checks_{AID}"]


def test_checks_module_loads(checks):
    assert checks, "autograder/checks/02_transformer_blocks.py registered no checks"
    for grade_id, found in checks.items():
        for c in found:
            assert callable(c.fn) and c.grade_id == grade_id and c.name.strip()


def test_every_grade_cell_has_checks_and_one_mirror(checks):
    cells = _grade_cells()
    assert len(cells) >= 10
    for grade_id in cells:
        found = checks.get(grade_id, [])
        assert found, f"grade cell {grade_id} has no hidden checks"
        mirrors = [c.name for c in found if c.mirrors_visible]
        assert len(mirrors) == 1, f"{grade_id}: expected exactly one mirrors_visible check, got {mirrors}"
        assert len(found) >= 2, f"{grade_id}: only the mirror of the visible tests, no hidden check"


def test_no_check_for_a_missing_grade_cell(checks):
    unknown = sorted(set(checks) - set(_grade_cells()))
    assert not unknown, f"checks registered for grade cells that are not in the notebook: {unknown}"


def test_check_names_are_unique_per_cell(checks):
    for grade_id, found in checks.items():
        names = [c.name for c in found]
        assert len(names) == len(set(names)), f"{grade_id}: duplicate check names {names}"


def test_source_notebook_keeps_no_hidden_test_code():
    for grade_id, cell in _grade_cells().items():
        lines = cell.source.split("\n")
        begin = [i for i, line in enumerate(lines) if "BEGIN HIDDEN TESTS" in line]
        end = [i for i, line in enumerate(lines) if "END HIDDEN TESTS" in line]
        assert len(begin) == len(end) == 1, grade_id
        hidden = [line for line in lines[begin[0] + 1:end[0]] if line.strip()]
        assert all(line.lstrip().startswith("#") for line in hidden), \
            f"{grade_id}: hidden test code left in the notebook (it belongs in autograder/checks/{AID}.py)"


def test_solution_names_used_by_the_checks_exist_in_the_notebook():
    """Names the checks construct or call in the kernel are defined (or imported) by the notebook's cells."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for name in ("scaled_dot_product_attention", "MultiHeadAttention", "sinusoidal_positional_encoding",
                 "is_permutation_equivariant", "causal_mask", "EncoderBlock", "DecoderBlock", "TransformerConfig",
                 "Transformer", "greedy_decode", "translation_loss", "reference_attention"):
        assert f"def {name}(" in text or f"class {name}(" in text or f"class {name}:" in text, name
    assert "import CountingModel" in text.replace("import CountingModel, ", "import CountingModel")
    assert "import FixedLogits" in text and "TranslationBatch" in text  # course.testing, course.data
    ids = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells}
    assert {"sdpa", "mha", "pe", "perm", "causal", "encoder_block", "decoder_block", "transformer", "greedy",
            "loss"} <= ids  # h.source(...) of the solution cells


def test_the_notebook_keeps_no_copy_of_a_course_helper():
    """One home: the helpers both the notebook and the checks use live in course/, the notebook imports them."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for name in ("to_torch_mha", "to_torch_encoder_layer", "to_torch_decoder_layer", "randomize_norms",
                 "CountingModel", "greedy_one_by_one", "FixedLogits"):
        assert f"def {name}(" not in text and f"class {name}(" not in text, f"the notebook defines {name} again"


def test_reference_blocks_match_pytorch():
    """course.nn's blocks (what the checks grade against and substitute) equal PyTorch's layers."""
    from course.testing import randomize_norms

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for norm_first in (False, True):
            torch.manual_seed(0)
            enc = randomize_norms(course.nn.EncoderBlock(12, 3, 20, 0.0, norm_first)).eval()
            x = torch.randn(2, 5, 12)
            pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
            torch.testing.assert_close(enc(x, (~pad)[:, None, None, :]),
                                       course.nn.to_torch_encoder_layer(enc)(x, src_key_padding_mask=pad))
            dec = randomize_norms(course.nn.DecoderBlock(12, 3, 20, 0.0, norm_first)).eval()
            y = torch.randn(2, 4, 12)
            causal = torch.ones(4, 4, dtype=torch.bool).tril()
            torch.testing.assert_close(dec(y, x, causal, (~pad)[:, None, None, :]),
                                       course.nn.to_torch_decoder_layer(dec)(y, x, tgt_mask=~causal,
                                                                             memory_key_padding_mask=pad))
        mha = course.nn.MultiHeadAttention(12, 3)
        q, kv = torch.randn(2, 3, 12), torch.randn(2, 5, 12)
        torch.testing.assert_close(mha(q, kv, kv)[0], course.nn.to_torch_mha(mha)(q, kv, kv)[0])


def test_planted_models_behave_as_the_notebook_says(module):
    """CountingModel counts with step src[b, 1] in eval mode and step + 1 in training mode."""
    from course.testing import CountingModel, greedy_one_by_one

    src = torch.tensor([[2, 1, 3], [2, 4, 3], [2, 2, 3]])
    assert greedy_one_by_one(CountingModel(11), src, 10, 2, 3) == [[2, 3], [2, 6, 10, 3], [2, 4, 6, 8, 10, 1, 3]]
    assert module._counting(src, 11, 10, 2, 3) == [[2, 3], [2, 6, 10, 3], [2, 4, 6, 8, 10, 1, 3]]
    m = CountingModel(11).train()
    assert int(m.decode(torch.tensor([[2]]), m.encode(src[:1]), src[:1])[0, -1].argmax()) == 4


def test_batched_causal_check_catches_a_leak():
    """check_causal_remote (one request for check_causal's inputs) passes causal functions, fails leaky ones."""
    from autograder.checkkit import check_causal_remote
    from course.testing import CheckError

    x = torch.randn(2, 6, 4)
    check_causal_remote(lambda t: t.cumsum(1), x, name="cumsum")
    with pytest.raises(CheckError, match="not causal"):
        check_causal_remote(lambda t: t.flip(1).cumsum(1).flip(1), x, name="reverse cumsum")
    mem = torch.randn(2, 3, 4)
    check_causal_remote(lambda t, mm: t.cumsum(1) + mm.sum(1, keepdim=True), x, repeat=(mem,), name="with memory")


def test_check_close_names_the_likely_mistake():
    from course.testing import CheckError, check_close

    e = torch.randn(3, 4)
    with pytest.raises(CheckError) as err:
        check_close(e * 2, e, likely={"values doubled": e * 2, "values negated": -e})
    assert str(err.value).splitlines()[0] == "output looks like values doubled"
    with pytest.raises(CheckError) as err:
        check_close(e + 1, e, likely={"values doubled": e * 2})
    assert "looks like" not in str(err.value)
    check_close(e, e, likely={"the same": e})  # a right answer never "looks like" a mistake
