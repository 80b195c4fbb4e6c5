"""Every Program is checked when it is loaded (issue 11, part 3).

Each corrupt or hand-edited variant of the embedded digits model's Program is refused by ``load_program`` with one
``ProgramError`` line naming the file and the defect, and by ``intsim run / check / golden / report`` with that line
and exit status 2. A format-3 file (no checksums) loads with exactly one warning. The schema table agrees with the
interpreter's kinds, with the contracts of ``intsim.ops`` and with docs/program.md.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from intsim.cli import main  # noqa: E402
from intsim.evaluate import quantize  # noqa: E402
from intsim.models.digits import digits_heldout  # noqa: E402
from intsim.kinds import BUILTIN_KINDS, get_op_kind, markdown_table  # noqa: E402
from intsim.program import (  # noqa: E402
    FORMAT_VERSION,
    ProgramError,
    UncheckedProgramWarning,
    load_program,
    save_program,
)
from intsim.quant.configs import make_config  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "program.md"


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def program_file(tmp_path_factory) -> Path:
    """A valid Program of the embedded digits model (fqvit-w8a8a4: Log-Int-Softmax, PTF GELU rows)."""
    _, program = quantize(None, None, None, make_config("fqvit-w8a8a4"), workers=0)
    return save_program(program, tmp_path_factory.mktemp("program") / "digits.intsim")


@pytest.fixture(scope="module")
def program(program_file):
    return load_program(program_file)


# ----------------------------------------------------------------------------- rewriting a Program file
def read_file(path: Path) -> tuple[dict, bytes]:
    """The safetensors header (a dict) and the data bytes of a Program file."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def write_file(path: Path, header: dict, data: bytes) -> Path:
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    return path


def edit_envelope(source: Path, target: Path, edit) -> Path:
    """Copy ``source`` to ``target`` with ``edit(envelope)`` applied to the parsed ``intsim`` envelope."""
    header, data = read_file(source)
    envelope = json.loads(header["__metadata__"]["intsim"])
    edit(envelope)
    header["__metadata__"]["intsim"] = json.dumps(envelope)
    return write_file(target, header, data)


def edit_program(source: Path, target: Path, edit) -> Path:
    """Copy with ``edit(body)`` applied to the envelope's ``program`` (``ops`` list, ``tensors`` dict)."""
    return edit_envelope(source, target, lambda envelope: edit(envelope["program"]))


def op(body: dict, name: str) -> dict:
    return next(item for item in body["ops"] if item["name"] == name)


def flip_byte(source: Path, target: Path, offset: int) -> Path:
    data = bytearray(source.read_bytes())
    data[offset] ^= 0x01
    target.write_bytes(bytes(data))
    return target


def to_format_3(envelope: dict) -> None:
    """An envelope as intsim wrote it before the checksums."""
    envelope["version"] = 3
    del envelope["constants_sha256"], envelope["sha256"]


def refusal(path: Path) -> str:
    """The message of the ProgramError that loading ``path`` raises (one line, naming the file)."""
    with pytest.raises(ProgramError) as caught:
        load_program(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


# ------------------------------------------------------------------------------------------ the corrupt cases
def _set(mapping: dict, key: str, value):
    mapping[key] = value


def _swap_kind(old: str, new: str):
    def edit(body):
        next(item for item in body["ops"] if item["kind"] == old)["kind"] = new
    return edit


def _read_ghost(body):
    body["tensors"]["ghost"] = dict(bits=8, signed=False, zero_point=0, scale=None, shape=None, kind="activation")
    op(body, "blocks.0.attn.q")["inputs"][0] = "ghost"


def _write_twice(body):
    op(body, "blocks.0.attn.k")["outputs"] = ["blocks.0.attn.q"]


# (id, edit of the envelope's program, substrings of the message after the file name)
EDITS = [
    ("attribute-removed", lambda b: op(b, "blocks.0.attn.q")["attrs"].pop("rounding"),
     ["op 'blocks.0.attn.q' (Requantize): attribute 'rounding': missing"]),
    ("attribute-unknown", lambda b: _set(op(b, "blocks.0.attn.q")["attrs"], "roundng", "half_up"),
     ["op 'blocks.0.attn.q' (Requantize): unknown attribute 'roundng'"]),
    ("heads-float", lambda b: _set(op(b, "blocks.0.attn.scores")["attrs"], "heads", 4.0),
     ["op 'blocks.0.attn.scores' (AttentionScores): attribute 'heads': expected an int >= 1, got 4.0"]),
    ("heads-bool", lambda b: _set(op(b, "blocks.0.attn.scores")["attrs"], "heads", True),
     ["attribute 'heads': expected an int >= 1, got True"]),
    ("heads-not-dividing", lambda b: _set(op(b, "blocks.0.attn.scores")["attrs"], "heads", 5),
     ["op 'blocks.0.attn.scores' (AttentionScores): attribute 'heads': expected an int dividing 64", "got 5"]),
    ("bits-string", lambda b: _set(b["tensors"]["blocks.0.attn.q"], "bits", "8"),
     ["tensor 'blocks.0.attn.q': field 'bits': expected an int in [1, 64], got '8'"]),
    ("rounding-int", lambda b: _set(op(b, "blocks.0.attn.q")["attrs"], "rounding", 3),
     ["attribute 'rounding': expected one of 'half_up', 'half_even', 'half_away', got 3"]),
    ("rounding-unknown", lambda b: _set(op(b, "blocks.0.attn.q")["attrs"], "rounding", "half_down"),
     ["attribute 'rounding': expected one of 'half_up', 'half_even', 'half_away' (did you mean", "got 'half_down'"]),
    ("qmin-above-qmax", lambda b: _set(op(b, "blocks.0.attn.q")["attrs"], "qmin", 256),
     ["op 'blocks.0.attn.q' (Requantize): attribute 'qmin': expected an int <= qmax (255), got 256"]),
    ("qmax-beyond-output", lambda b: _set(op(b, "blocks.0.attn.q")["attrs"], "qmax", 300),
     ["attribute 'qmax': expected an int within the 8-bit unsigned range [0, 255] of 'blocks.0.attn.q', got 300"]),
    ("zero-point-beyond-input", lambda b: _set(op(b, "blocks.0.attn.scores")["attrs"], "q_zero_point", 256),
     ["attribute 'q_zero_point': expected a zero point within the 8-bit unsigned range [0, 255]"]),
    ("sizes-not-summing", lambda b: _set(op(b, "blocks.0.attn.split")["attrs"], "sizes", [64, 64, 63]),
     ["op 'blocks.0.attn.split' (Split): attribute 'sizes': expected sizes summing to 192"]),
    ("kind-lis-to-uniform", _swap_kind("LogIntSoftmax", "UniformSoftmax"),
     ["op 'blocks.0.attn.probs' (UniformSoftmax): attribute 'out_bits': missing"]),
    ("kind-scores-to-values", _swap_kind("AttentionScores", "AttentionValues"),
     ["op 'blocks.0.attn.scores' (AttentionValues): unknown attribute 'k_zero_point'"]),
    ("kind-unknown", _swap_kind("Patchify", "Patchify2d"),
     ["op 'patch_embed.patchify' (Patchify2d): unknown kind 'Patchify2d' (did you mean 'Patchify'?)"]),
    ("input-removed", lambda b: op(b, "blocks.0.attn.q")["inputs"].pop(),
     ["op 'blocks.0.attn.q' (Requantize): expected 3 inputs (acc, multiplier, shift), got 2"]),
    ("output-removed", lambda b: b["tensors"].pop("logits"),
     ["expected exactly one tensor of kind 'output', got 0"]),
    ("second-input", lambda b: b["tensors"]["blocks.0.attn.q"].update(kind="input", shape=[17, 64]),
     ["expected exactly one tensor of kind 'input', got 2"]),
    ("reads-unwritten-tensor", _read_ghost, ["op 'blocks.0.attn.q' (Requantize): reads 'ghost' before any op writes it"]),
    ("reads-undeclared-tensor", lambda b: _set(op(b, "blocks.0.attn.q")["inputs"], 0, "nowhere"),
     ["reads undeclared tensor 'nowhere'"]),
    ("written-twice", _write_twice, ["op 'blocks.0.attn.k' (Requantize): writes 'blocks.0.attn.q', already written by "
                                     "op 'blocks.0.attn.q'"]),
    ("output-never-written", lambda b: b["ops"].pop(), ["output tensor 'logits' is written by no op"]),
    ("constant-shape", lambda b: _set(b["tensors"]["patch_embed.weight"], "shape", [12, 64]),
     ["constant 'patch_embed.weight': data of shape (64, 12), declared shape (12, 64)"]),
    ("weight-shape-vs-input", lambda b: _set(op(b, "blocks.0.attn.qkv")["inputs"], 1, "blocks.0.mlp.fc1.weight"),
     ["op 'blocks.0.attn.qkv' (Linear): input 'blocks.0.attn.qkv.bias': expected shape (256,)"]),
    ("shift-out-of-range", lambda b: _set(op(b, "blocks.0.attn.q")["inputs"], 2, "blocks.0.norm1.bias"),
     ["op 'blocks.0.attn.q' (Requantize): input 'blocks.0.norm1.bias': expected shift values in [0, 62]"]),
    ("activation-as-constant", lambda b: _set(op(b, "blocks.0.attn.q")["inputs"], 1, "blocks.0.norm1"),
     ["input 'blocks.0.norm1': expected a constant tensor (the multiplier), got an activation"]),
    ("field-missing", lambda b: b["tensors"]["blocks.0.attn.q"].pop("kind"),
     ["tensor 'blocks.0.attn.q': missing field 'kind'"]),
    ("scale-edited", lambda b: _set(b["tensors"]["blocks.0.attn.q"], "scale", 0.5),
     ["Program checksum mismatch"]),
]


@pytest.mark.parametrize("case", EDITS, ids=[case[0] for case in EDITS])
def test_hand_edited_program_is_refused_naming_the_defect(case, program_file, tmp_path):
    _, edit, expected = case
    message = refusal(edit_program(program_file, tmp_path / "edited.intsim", edit))
    for part in expected:
        assert part in message, (part, message)


def test_constant_beyond_its_declared_width_names_the_first_offending_element(program, program_file, tmp_path):
    weight = program.constants["patch_embed.weight"]
    first = np.unravel_index(int(np.argmax((weight < -8) | (weight > 7))), weight.shape)
    path = edit_program(program_file, tmp_path / "w4.intsim",
                        lambda body: _set(body["tensors"]["patch_embed.weight"], "bits", 4))
    assert refusal(path).endswith(f"constant 'patch_embed.weight': holds {int(weight[first])} at index "
                                  f"{tuple(int(i) for i in first)}, outside its declared 4-bit signed range [-8, 7]")


def test_truncated_file_is_refused(program_file, tmp_path):
    path = tmp_path / "cut.intsim"
    path.write_bytes(program_file.read_bytes()[:-100])
    assert "not a readable Program file (truncated or corrupt?)" in refusal(path)


def test_a_flipped_byte_in_each_constant_is_refused_naming_it(program, program_file, tmp_path):
    header, _ = read_file(program_file)
    start = 8 + int.from_bytes(program_file.read_bytes()[:8], "little")
    names = [name for name in header if name != "__metadata__"]
    assert sorted(names) == sorted(program.constants)
    for name in names:
        begin, end = header[name]["data_offsets"]
        path = flip_byte(program_file, tmp_path / "flipped.intsim", start + (begin + end) // 2)
        assert refusal(path).endswith(f"constant {name!r}: data checksum mismatch (corrupt file?)")


def test_a_flipped_byte_anywhere_in_the_header_is_refused(program, program_file, tmp_path):
    """250 bytes evenly spread over the header (length, safetensors entries, envelope, checksums, padding): each
    refused, or (a float digit beyond its round-trip precision) loaded as the very same Program."""
    length = int.from_bytes(program_file.read_bytes()[:8], "little")
    offsets = range(0, 8 + length, (8 + length) // 250 + 1)
    refused = 0
    for offset in offsets:
        path = flip_byte(program_file, tmp_path / "flipped.intsim", offset)
        try:
            assert load_program(path).sha256() == program.sha256(), offset
        except ProgramError as error:
            assert str(error).startswith(f"{path}: "), error
            refused += 1
    assert refused >= 0.95 * len(offsets)


def test_a_flipped_digit_of_a_scale_is_refused_by_the_program_checksum(program_file, tmp_path):
    data = program_file.read_bytes()
    offset = data.index(b'\\"scale\\":0.') + len(b'\\"scale\\":0.')
    assert "Program checksum mismatch" in refusal(flip_byte(program_file, tmp_path / "flipped.intsim", offset))


def test_format_3_loads_unchecked_with_one_warning(program, program_file, tmp_path):
    path = edit_envelope(program_file, tmp_path / "v3.intsim", to_format_3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_program(path)
    assert [warning.category for warning in caught] == [UncheckedProgramWarning]
    assert str(caught[0].message) == (f"{path}: Program format 3 has no data checksum; loaded unchecked - re-save it "
                                      "to add one")
    assert loaded.sha256() == program.sha256()
    resaved = save_program(loaded, tmp_path / "v4.intsim")
    assert resaved.read_bytes() == program_file.read_bytes()


def test_format_3_is_still_checked_against_the_schema(program_file, tmp_path):
    def to_format_3_with_float_heads(envelope):
        to_format_3(envelope)
        op(envelope["program"], "blocks.0.attn.scores")["attrs"]["heads"] = 4.0

    path = edit_envelope(program_file, tmp_path / "v3.intsim", to_format_3_with_float_heads)
    assert "attribute 'heads'" in refusal(path)


def test_other_versions_are_refused(program_file, tmp_path):
    for version in (2, FORMAT_VERSION + 1, str(FORMAT_VERSION), 4.5):
        path = edit_envelope(program_file, tmp_path / "v.intsim", lambda envelope: _set(envelope, "version", version))
        assert f"Program format version {version!r}, but this intsim reads version {FORMAT_VERSION}" in refusal(path)


def test_two_saves_are_byte_identical_and_record_the_program_hash(program, program_file, tmp_path):
    again = save_program(load_program(program_file), tmp_path / "again.intsim")
    assert again.read_bytes() == program_file.read_bytes()
    header, _ = read_file(program_file)
    envelope = json.loads(header["__metadata__"]["intsim"])
    assert envelope["version"] == FORMAT_VERSION and envelope["sha256"] == program.sha256()
    assert sorted(envelope["constants_sha256"]) == sorted(program.constants)


def test_validate_checks_programs_in_memory(program, tmp_path):
    broken = copy.deepcopy(program)
    next(item for item in broken.ops if item.kind == "AttentionScores").attrs["heads"] = np.bool_(True)
    with pytest.raises(ProgramError, match=r"^op 'blocks\.0\.attn\.scores' \(AttentionScores\): attribute 'heads'"):
        broken.validate()
    broken = copy.deepcopy(program)
    broken.constants["blocks.0.attn.q.shift"] = broken.constants["blocks.0.attn.q.shift"].astype(np.float32)
    with pytest.raises(ProgramError, match="integers only"):
        save_program(broken, tmp_path / "never-written.intsim")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- the commands
def _command(name: str, program: str, tmp: Path) -> list[str]:
    image = tmp / "digit.png"
    Image.fromarray(np.ascontiguousarray(np.array(digits_heldout()[0][0]).transpose(1, 2, 0))).save(image)
    return {"run": ["run", program, str(image)], "check": ["check", program, "--limit", "1", "-j", "0"],
            "golden": ["golden", program, "-o", str(tmp / "golden-out")],
            "report": ["report", program, "--limit", "1"]}[name]


CORRUPT_FILES = {
    "truncated": lambda source, target: target.write_bytes(source.read_bytes()[: len(source.read_bytes()) // 2]),
    "flipped-weight": lambda source, target: flip_byte(source, target, len(source.read_bytes()) - 3),
    "heads-float": lambda source, target: edit_program(
        source, target, lambda body: _set(op(body, "blocks.0.attn.scores")["attrs"], "heads", 4.0)),
}


@pytest.mark.parametrize("command", ["run", "check", "golden", "report"])
@pytest.mark.parametrize("corruption", sorted(CORRUPT_FILES))
def test_every_command_refuses_a_corrupt_program_with_one_line_and_status_2(command, corruption, program_file,
                                                                           tmp_path, capsys):
    path = tmp_path / "corrupt.intsim"
    CORRUPT_FILES[corruption](program_file, path)
    argv = _command(command, str(path), tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in re.split(r"[\r\n]", captured.err) if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"intsim {command}: error: {path}: "), lines
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "golden-out").exists()


def test_a_command_prints_the_format_3_warning_as_one_line(program_file, tmp_path, capsys):
    path = edit_envelope(program_file, tmp_path / "v3.intsim", to_format_3)
    assert main(_command("run", str(path), tmp_path)) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"intsim run: warning: {path}: Program format 3 has no data checksum; loaded unchecked - "
                     "re-save it to add one"]


# ------------------------------------------------------------------------------------------ the schema table
def test_every_builtin_kind_runs_an_op_of_both_backends():
    """Each kind's function is an op of intsim.ops, with a torch twin of the same name and a golden suite."""
    from intsim.ops import OPS
    from intsim.quant import torch_ops

    names = {spec.name for spec in OPS}
    for kind in BUILTIN_KINDS:
        function = get_op_kind(kind).function
        if function is not None:
            assert function in names and callable(getattr(torch_ops, function)), kind


def test_the_schema_ranges_are_the_ops_contracts():
    import intsim.op_schema as schema
    from intsim.ops import gelu, layernorm, matmul, requant, rounding, softmax

    assert schema.SHIFT == (0, requant.MAX_SHIFT)
    assert schema.MULTIPLIER == (-(2**requant.MULTIPLIER_BITS - 1), 2**requant.MULTIPLIER_BITS - 1)
    assert schema.INPUT_SHIFT == (0, matmul.MAX_INPUT_SHIFT)
    assert schema.PTF_ALPHA == (0, layernorm.MAX_PTF_ALPHA)
    assert schema.LAYERNORM_INPUT_BITS == layernorm.MAX_INPUT_BITS
    assert schema.LAYERNORM_MAX_CHANNELS == layernorm.MAX_CHANNELS
    assert schema.SOFTMAX_INPUT_BITS == softmax._MAX_BITS
    assert schema.MAX_FULL_SCALE == softmax.MAX_FULL_SCALE
    assert schema.LUT_BITS == gelu.MAX_LUT_BITS
    assert schema.LIS_ZERO_CODE == softmax.ZERO_CODE
    assert schema.ROUNDING_MODES == tuple(rounding.ROUNDING_MODES)
    exp = {attribute.name: (attribute.lo, attribute.hi) for attribute in get_op_kind("LogIntSoftmax").schema.attributes}
    assert exp["x0"] == (-softmax._MAX_X0, -1) and exp["b_int"] == (-softmax._MAX_B, softmax._MAX_B)
    assert exp["c_int"] == (-softmax._MAX_C, softmax._MAX_C) and exp["n"] == (0, softmax._MAX_N)
    with pytest.raises(ValueError):
        softmax.uniform_levels(schema.SOFTMAX_OUT_BITS + 1, None, "test")
    softmax.uniform_levels(schema.SOFTMAX_OUT_BITS, None, "test")


def test_docs_show_the_schema_table():
    assert markdown_table() in DOCS.read_text(), "regenerate the table: python -c 'from intsim.kinds import " \
                                                 "markdown_table; print(markdown_table())'"


def test_checksums_recompute_from_the_raw_file_as_documented(program_file):
    """docs/program.md's recipe, with hashlib and the raw bytes only (no numpy, no intsim)."""
    import hashlib

    data = program_file.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header, blob = json.loads(data[8 : 8 + length]), data[8 + length :]
    text = header.pop("__metadata__")["intsim"]
    envelope = json.loads(text)
    begin = text.index('"program":') + len('"program":')
    _, end = json.JSONDecoder().raw_decode(text, begin)
    dtypes = {"I8": "int8", "U8": "uint8", "I16": "int16", "U16": "uint16", "I32": "int32", "I64": "int64"}
    program_hash = hashlib.sha256(text[begin:end].encode())
    for name in sorted(header):
        entry = header[name]
        shape = "(" + ", ".join(map(str, entry["shape"])) + ("," if len(entry["shape"]) == 1 else "") + ")"
        record = f"{name}|{dtypes[entry['dtype']]}|{shape}".encode() + blob[slice(*entry["data_offsets"])]
        assert hashlib.sha256(record).hexdigest() == envelope["constants_sha256"][name], name
        program_hash.update(record)
    assert program_hash.hexdigest() == envelope["sha256"]
