"""What the class receives: the one declaration ``python -m autograder student-copy`` builds from.

Edit this file, not the builder (:mod:`autograder.student_copy`):

- :data:`REFERENCES` says, for every public definition of the reference modules of ``course``,
  which assignment it answers. While that assignment is open the student copy leaves the
  definition out of its ``course`` package; ``None`` means it answers none and always ships.
  A new reference block must be listed here (the build refuses an unlisted one).
- :data:`CLOSED` lists the assignments whose deadline has passed: their references ship.
  ``--closed AID`` on the command line adds to it for one build.
- :data:`PACKAGE_URL` is what the first cell of every notebook ``pip install``s where the
  ``course`` package is missing (Colab): the class repository.

A grading kernel imports the same cut (and, closed or not, none of the graded assignment's answers:
:func:`autograder.student_copy.kernel_package`); the hidden checks run with the full ``course``.
"""
from __future__ import annotations

from dataclasses import dataclass

A01 = "01_attention_seq2seq"
A02 = "02_transformer_blocks"
A03 = "03_local_attention"
A04 = "04_vit"
A05 = "05_swin"
A06 = "06_unet"


@dataclass(frozen=True)
class Reference:
    module: str  # dotted module of the course package, e.g. "course.nn"
    name: str  # a top-level function or class of that module
    answers: str | None  # the assignment (folder of source/) one of whose exercises it answers; None: answers none
    why: str = ""  # one line for the reader: which exercise, or why it ships


#: Modules of ``course`` whose every public top-level definition must be listed in REFERENCES.
REFERENCE_MODULES: tuple[str, ...] = ("course.nn", "course.seq2seq", "course.local_attention", "course.vit",
                                      "course.swin", "course.unet")

REFERENCES: tuple[Reference, ...] = (
    Reference("course.seq2seq", "dot_score", A01, "part 1"),
    Reference("course.seq2seq", "scaled_dot_score", A01, "part 1"),
    Reference("course.seq2seq", "general_score", A01, "part 1"),
    Reference("course.seq2seq", "additive_score", A01, "part 1"),
    Reference("course.seq2seq", "masked_softmax", A01, "part 2"),
    Reference("course.seq2seq", "AdditiveAttention", A01, "part 3"),
    Reference("course.seq2seq", "Encoder", A01, "part 4"),
    Reference("course.seq2seq", "AttentionDecoder", A01, "part 5"),
    Reference("course.seq2seq", "fixed_context", A01, "part 6"),
    Reference("course.seq2seq", "FixedContext", A01, "part 6: the baseline's attention, built on fixed_context"),
    Reference("course.seq2seq", "PlainDecoder", A01, "part 6: the baseline decoder, built on AttentionDecoder"),
    Reference("course.seq2seq", "Seq2Seq", A01, "part 7"),
    Reference("course.seq2seq", "greedy_decode", A01, "part 8"),
    Reference("course.seq2seq", "beam_search", A01, "part 9"),
    Reference("course.nn", "fingerprint", None, "the graders' marker on course.nn's results, no exercise"),
    Reference("course.nn", "scaled_dot_product_attention", A02, "part 1"),
    Reference("course.nn", "MultiHeadAttention", A02, "part 2"),
    Reference("course.nn", "sinusoidal_positional_encoding", A02, "part 3"),
    Reference("course.nn", "causal_mask", A02, "part 5"),
    Reference("course.nn", "MLP", A02, "part 6: the feed-forward sublayer of the blocks"),
    Reference("course.nn", "BlockConfig", A02, "part 6: the configuration of TransformerBlock, useless without it"),
    Reference("course.nn", "TransformerBlock", A02, "part 6: the encoder block"),
    Reference("course.nn", "EncoderBlock", A02, "part 6"),
    Reference("course.nn", "DecoderBlock", A02, "part 6"),
    Reference("course.nn", "TransformerConfig", A02, "part 7: the configuration of Transformer"),
    Reference("course.nn", "Transformer", A02, "part 7"),
    Reference("course.nn", "to_torch_mha", None, "an adapter the visible checks use: answers nothing"),
    Reference("course.nn", "to_torch_encoder_layer", None, "an adapter the visible checks use: answers nothing"),
    Reference("course.nn", "to_torch_decoder_layer", None, "an adapter the visible checks use: answers nothing"),
    Reference("course.local_attention", "local_attention_naive", A03, "part 1"),
    Reference("course.local_attention", "local_attention", A03, "part 2"),
    Reference("course.local_attention", "local_attention_chunked", A03, "part 3"),
    Reference("course.local_attention", "LocalAttention2d", A03, "part 4"),
    Reference("course.local_attention", "NonLocalBlock", A03, "part 5"),
    Reference("course.local_attention", "ResBlock", A03, "part 6"),
    Reference("course.local_attention", "ResNet", A03, "part 6"),
    Reference("course.vit", "patchify", A04, "part 1"),
    Reference("course.vit", "LinearPatchEmbedding", A04, "part 2"),
    Reference("course.vit", "ConvPatchEmbedding", A04, "part 2"),
    Reference("course.vit", "ViTBlock", A04, "part 3"),
    Reference("course.vit", "ViT", A04, "part 4"),
    Reference("course.vit", "soft_cross_entropy", A04, "part 5"),
    Reference("course.vit", "attention_rollout", A04, "part 6"),
    Reference("course.vit", "position_similarity", A04, "part 7"),
    Reference("course.vit", "torchvision_block_names", None, "the name map to torchvision's ViT block, used by the visible checks"),
    Reference("course.vit", "torchvision_names", None, "the name map to torchvision's ViT, used by the visible checks"),
    Reference("course.vit", "load_torchvision_weights", None, "loads torchvision's ViT into the notebook's: answers nothing"),
    Reference("course.swin", "window_partition", A05, "part 1"),
    Reference("course.swin", "window_reverse", A05, "part 1"),
    Reference("course.swin", "relative_position_index", A05, "part 2"),
    Reference("course.swin", "shift_mask", A05, "part 3"),
    Reference("course.swin", "shifted_window_attention", A05, "part 4"),
    Reference("course.swin", "ShiftedWindowAttention", A05, "part 4: the layer around shifted_window_attention"),
    Reference("course.swin", "PatchMerging", A05, "part 5"),
    Reference("course.swin", "SwinBlock", A05, "part 6"),
    Reference("course.swin", "Swin", A05, "part 6"),
    Reference("course.swin", "torchvision_names", None, "the name map to torchvision's Swin, used by the visible checks"),
    Reference("course.swin", "load_torchvision_weights", None, "loads torchvision's Swin into the notebook's: answers nothing"),
    Reference("course.unet", "fc_to_conv", A06, "part 1"),
    Reference("course.unet", "conv_transpose2d_stamp", A06, "part 2"),
    Reference("course.unet", "max_unpool", A06, "part 3"),
    Reference("course.unet", "double_conv", None, "a helper the notebook imports (U-Net's blocks): answers nothing"),
    Reference("course.unet", "UNet", A06, "part 4"),
    Reference("course.unet", "bce_loss", A06, "part 5"),
    Reference("course.unet", "soft_dice_loss", A06, "part 5"),
    Reference("course.unet", "combined_loss", A06, "part 5"),
    Reference("course.unet", "pixel_accuracy", A06, "part 6"),
    Reference("course.unet", "iou", A06, "part 6"),
    Reference("course.unet", "dice", A06, "part 6"),
)

#: Assignments whose deadline has passed: the references that answer them reach the class.
CLOSED: tuple[str, ...] = ()

#: pip requirement of the class repository, installed by each notebook's first cell where ``course`` is
#: missing, e.g. "git+https://github.com/ORG/CLASS-REPO" (a public repository) or the URL of a zip of the
#: student copy ("https://github.com/ORG/CLASS-REPO/archive/refs/heads/main.zip"). None: the notebooks
#: ask students to install the package themselves. ``--package-url`` overrides it for one build.
PACKAGE_URL: str | None = None
