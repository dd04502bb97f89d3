"""The mutants of 05_swin graded through the sandboxed path that grades students (tests/mutation.py)."""
from mutation import check_mutants, needs_sandbox


@needs_sandbox
def test_mutants_are_killed_once_and_correct_variants_keep_every_point():
    check_mutants("05_swin")
