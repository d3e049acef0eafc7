"""A Gemma-3-style tokenizer trained locally, for generated checkpoints (no download is possible or needed).

A SentencePiece BPE model is trained on a small English corpus built here (prompt-like sentences and the
official default negative prompt), with Gemma's conventions: ``<pad>``=0, ``<eos>``=1, ``<bos>``=2, ``<unk>``=3,
``<mask>``=4, ``[multimodal]``=5, ``<start_of_turn>``=105, ``<end_of_turn>``=106 (so Gemma 3's
``eos_token_id`` [1, 106] holds), byte fallback, digits split, no dummy prefix. Unused ids are filled with
``<unusedN>`` pieces up to ``VOCAB_SIZE`` = 4096, the last three being ``<start_of_image>``, ``<end_of_image>``,
``<image_soft_token>`` (4093-4095: the tiny Gemma config's boi/eoi/image ids; for the full config the real
ids 255999/256000/262144 are not in this vocabulary, which only matters for image inputs).
``tokenizer.json`` comes from transformers' own ``GemmaTokenizerFast`` conversion.

The files depend on nothing but this module and the library versions, so they are built once per process
and cached as bytes. This module never downloads anything and never touches model weights.
"""

from __future__ import annotations

import functools
import io
import itertools
import tempfile
from pathlib import Path

from ltx2_edge.inputs import DEFAULT_NEGATIVE_PROMPT

VOCAB_SIZE = 4096
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)

# The official default negative prompt goes into the tokenizer's training corpus (one copy, in request.py).

_HEAD = ("<mask>", "[multimodal]")  # ids 4, 5
_TURN = ("<start_of_turn>", "<end_of_turn>")  # ids 105, 106
_IMAGE = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")  # the last three ids
_FIRST_TURN_ID = 105

# Gemma's chat format (what apply_chat_template produces for the official tokenizer, system turn folded in).
_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{% set ns.sys = (m['content'] if m['content'] is string else m['content'][0]['text']) + '\n\n' %}{% else %}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n' + ns.sys }}"
    "{% set ns.sys = '' %}{% if m['content'] is string %}{{ m['content'] | trim }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


_SUBJECTS = (
    "a red fox", "an old fisherman", "two children", "a golden retriever", "the astronaut", "a street musician",
    "a flock of seagulls", "a young woman in a blue coat", "an elderly man with a wooden cane", "a small robot",
    "the chef", "a ballet dancer", "a black cat", "a herd of elephants", "a surfer", "a cyclist in yellow",
    "the orchestra", "a lighthouse keeper", "a group of friends", "a hummingbird", "a knight in silver armor",
    "a taxi driver", "a grandmother", "a jazz trumpeter", "a news reporter", "a toddler", "a hot air balloon",
)  # fmt: skip
_ACTIONS = (
    "walks slowly through", "runs across", "sings quietly in", "dances joyfully on", "looks out over",
    "waits patiently beside", "paints a picture of", "rides a bicycle along", "plays the violin near",
    "laughs loudly in", "jumps over a puddle in", "sleeps peacefully under a tree in", "cooks dinner in",
    "reads a letter aloud in", "explores", "whispers a secret in", "argues with a friend in", "drifts above",
)  # fmt: skip
_PLACES = (
    "a misty forest at dawn", "a crowded city street", "the sandy beach at sunset", "a quiet library",
    "a snowy mountain village", "an abandoned train station", "a neon-lit alley at night", "a field of sunflowers",
    "the rooftop of a skyscraper", "a cozy kitchen", "a rainy harbor", "the surface of the moon",
    "a medieval castle courtyard", "a bustling market", "a calm lake", "a desert canyon", "an underwater reef",
)  # fmt: skip
_DETAILS = (
    "The camera slowly pans to the left.", "Close-up shot, shallow depth of field.",
    "Wide aerial view, golden hour lighting.", "Handheld camera, natural light, 24 frames per second.",
    "The scene is lit by warm candlelight.", "Soft piano music plays in the background.",
    "Birds chirp and leaves rustle in the wind.", "Waves crash gently against the shore.",
    "A distant train whistle echoes twice.", "Rain patters on the window; thunder rumbles far away.",
    'She says: "We should leave before 7:30."', "He answers, 'Not yet, wait for the signal!'",
    "The crowd cheers as fireworks burst overhead.", "A dog barks three times, then silence.",
    "Slow motion, 4K, cinematic color grading.", "The shot zooms in on the clock: 12:45 exactly.",
)  # fmt: skip


def corpus() -> list[str]:
    """The training sentences: deterministic prompt-like lines plus the default negative prompt."""
    lines = [DEFAULT_NEGATIVE_PROMPT]
    combos = itertools.product(range(len(_SUBJECTS)), range(len(_ACTIONS)))
    for i, j in combos:
        # A fixed stride through places and details varies the sentences without any randomness.
        place = _PLACES[(7 * i + 3 * j) % len(_PLACES)]
        detail = _DETAILS[(i + 5 * j) % len(_DETAILS)]
        subject = _SUBJECTS[i][0].upper() + _SUBJECTS[i][1:]
        lines.append(f"{subject} {_ACTIONS[j]} {place}. {detail}")
    return lines


def _train_proto() -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=model,
        model_type="bpe",
        vocab_size=VOCAB_SIZE - len(_HEAD) - len(_TURN) - len(_IMAGE) - 99,
        hard_vocab_limit=False,  # the corpus is small: keep what BPE finds, pad the rest with <unusedN>
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        num_threads=1,  # one thread: the trained model is the same bytes on every run
        minloglevel=2,
    )
    return model.getvalue()


def _gemma_layout(trained: bytes) -> bytes:
    """Re-number the trained pieces into Gemma's id layout (see the module docstring)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    src = pb.ModelProto()
    src.ParseFromString(trained)
    piece_type = pb.ModelProto.SentencePiece
    out = pb.ModelProto()
    out.CopyFrom(src)
    del out.pieces[:]
    unused = itertools.count()

    def add(piece: str, kind: int, score: float = 0.0) -> None:
        out.pieces.add(piece=piece, score=score, type=kind)

    def pad_to(n: int) -> None:
        while len(out.pieces) < n:
            add(f"<unused{next(unused)}>", piece_type.USER_DEFINED)

    for p in src.pieces[:4]:  # <pad> <eos> <bos> <unk>, already at 0-3
        out.pieces.append(p)
    for piece in _HEAD:
        add(piece, piece_type.USER_DEFINED)
    pad_to(_FIRST_TURN_ID)
    for piece in _TURN:
        add(piece, piece_type.USER_DEFINED)
    # BPE merge priority lives in each piece's score, not its id, so moving trained pieces keeps encoding exact.
    for p in src.pieces[4:]:
        out.pieces.append(p)
    if len(out.pieces) > VOCAB_SIZE - len(_IMAGE):
        raise RuntimeError(f"trained tokenizer has {len(out.pieces)} pieces, more than {VOCAB_SIZE} allows")
    pad_to(VOCAB_SIZE - len(_IMAGE))
    for piece in _IMAGE:
        add(piece, piece_type.USER_DEFINED)
    out.trainer_spec.vocab_size = len(out.pieces)
    return out.SerializeToString()


@functools.lru_cache(maxsize=1)
def tokenizer_files() -> dict[str, bytes]:
    """File name -> bytes of the tokenizer files a Gemma 3 folder holds (``TOKENIZER_FILES``), built once."""
    from transformers import GemmaTokenizerFast

    model = _gemma_layout(_train_proto())
    with tempfile.TemporaryDirectory(prefix="ltx2-edge-tokenizer-") as tmp:
        vocab_file = Path(tmp) / "src" / "tokenizer.model"
        vocab_file.parent.mkdir()
        vocab_file.write_bytes(model)
        tokenizer = GemmaTokenizerFast(
            vocab_file=str(vocab_file),
            add_bos_token=True,
            add_eos_token=False,
            padding_side="left",
            extra_special_tokens={"boi_token": _IMAGE[0], "eoi_token": _IMAGE[1], "image_token": _IMAGE[2]},
            chat_template=_CHAT_TEMPLATE,
        )
        out = Path(tmp) / "out"
        tokenizer.save_pretrained(str(out))
        files = {name: (out / name).read_bytes() for name in TOKENIZER_FILES}
    if files["tokenizer.model"] != model:
        raise RuntimeError("transformers rewrote tokenizer.model while saving; the Gemma folder would disagree")
    return files
