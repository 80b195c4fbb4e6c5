"""The op-kind registry (:mod:`intsim.kinds`) and the backends (:mod:`intsim.backends`).

A kind registered from outside validates, saves, loads, runs on both backends, is traced, reported and written as
golden vectors like a built-in one, and is gone after it is unregistered. The torch backend converts a Program's
constants once, not once per batch; the numba backend's fusion table finds the fused groups of a ViT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from intsim import op_schema as s
from intsim.backends import Backend, Fusion, get_backend, register_backend
from intsim.backends.base import ArrayBackend
from intsim.kinds import (
    BUILTIN_KINDS,
    OP_KINDS,
    OpKind,
    check_op,
    get_op_kind,
    kind_string,
    markdown_table,
    op_kinds,
    parse_kind,
    register_op_kind,
    registered_op_kind,
    unregister_op_kind,
)
from intsim.op_schema import Attribute, Operand, OpSchema, SchemaError
from intsim.program import Op, Program, ProgramError, TensorSpec, load_program, save_program


# ------------------------------------------------------------------------------------------------ a toy kind
def _toy_rule(view):
    x, multiplier, shift = view.inputs
    for constant in (multiplier, shift):
        s.per_channel(constant, s.channels(x), x)
    return [x.shape]


def _toy_execute(be, a, x, multiplier, shift):
    return be.ops.requantize(x, multiplier, shift, zero_point=0, qmin=-(2**31), qmax=2**31 - 1, rounding=a["rounding"])


def _toy_recompute(report, program, op, inputs, outputs):
    x, multiplier, shift = (np.asarray(value).astype(np.int64) for value in inputs)
    product = x * multiplier
    report.add("product", product, bound=255 * int(np.abs(multiplier).max()))
    return (product + ((1 << shift) >> 1)) >> shift  # half_up


TOY = OpKind(
    "ToyScale",
    OpSchema("ToyScale_v2", (Operand("x"), Operand("multiplier", constant=True, values=s.MULTIPLIER),
                             Operand("shift", constant=True, values=s.SHIFT)),
             (Attribute("rounding", "str", choices=s.ROUNDING_MODES),), _toy_rule, checks="x (..., C)"),
    execute=_toy_execute, function="requantize", version=2, summary="x -> round(x * M / 2**k)",
    intermediates=("product",), recompute=_toy_recompute,
)


def toy_program(multiplier: int = 3, shift: int = 1) -> Program:
    tensors = {
        "pixels": TensorSpec(8, False, shape=[3, 2, 2], kind="input", scale=1.0),
        "toy.multiplier": TensorSpec(32, True, shape=[1], kind="constant"),
        "toy.shift": TensorSpec(8, False, shape=[1], kind="constant"),
        "out": TensorSpec(32, True, kind="output"),
    }
    constants = {"toy.multiplier": np.array([multiplier], dtype=np.int32), "toy.shift": np.array([shift], np.uint8)}
    ops = [Op("ToyScale_v2", "toy", ["pixels", "toy.multiplier", "toy.shift"], ["out"], {"rounding": "half_up"})]
    return Program(ops=ops, tensors=tensors, constants=constants, metadata={"model": "toy"})


PIXELS = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2) * 7


def test_a_registered_kind_validates_saves_loads_runs_and_is_unregistered_after(tmp_path):
    from intsim.interpreter import run_program

    assert "ToyScale_v2" not in OP_KINDS
    with registered_op_kind(TOY):
        assert get_op_kind("ToyScale_v2") is TOY and TOY.kind == "ToyScale_v2"
        assert op_kinds()[-1] is TOY and op_kinds()[: len(BUILTIN_KINDS)] == tuple(OP_KINDS[k] for k in BUILTIN_KINDS)
        program = toy_program().validate()
        loaded = load_program(save_program(program, tmp_path / "toy.intsim"))
        assert loaded.sha256() == program.sha256() and loaded.ops[0].kind == "ToyScale_v2"
        expected = (PIXELS.astype(np.int64) * 3 + 1) >> 1
        seen = []
        logits = run_program(loaded, PIXELS, trace=lambda op, inputs, outputs: seen.append((op.kind, len(inputs))))
        np.testing.assert_array_equal(logits, expected)
        assert logits.dtype == np.int32 and seen == [("ToyScale_v2", 3)]
        torch = pytest.importorskip("torch")
        from intsim.quant.exact import run_exact

        assert torch.equal(run_exact(loaded, PIXELS), torch.as_tensor(expected, dtype=torch.int32))
        with pytest.raises(ProgramError, match=r"op 'toy' \(ToyScale_v2\): attribute 'rounding': expected one of"):
            Program(**{**toy_program().__dict__, "ops": [Op("ToyScale_v2", "toy", ["pixels", "toy.multiplier",
                                                                                      "toy.shift"], ["out"],
                                                         {"rounding": "up"})]}).validate()
    assert "ToyScale_v2" not in OP_KINDS
    with pytest.raises(ProgramError, match=r"unknown kind 'ToyScale_v2'.*known: AsymmetricLinear, AttentionScores"):
        toy_program().validate()
    with pytest.raises(ProgramError, match="unknown kind 'ToyScale_v2'"):
        run_program(toy_program(), PIXELS)


def test_a_registered_kind_gets_a_report_and_golden_vectors(tmp_path):
    from intsim.golden.manifest import INPUT_ROLES, read_manifest
    from intsim.golden.report import AccumulatorReport
    from intsim.golden.writer import write_golden

    with registered_op_kind(TOY):
        program = toy_program().validate()
        report = AccumulatorReport(program).run([PIXELS], progress=False)
        (entry,) = report["ops"]
        assert entry["kind"] == "ToyScale_v2" and [q["name"] for q in entry["quantities"]] == ["product", "output out"]
        assert INPUT_ROLES["ToyScale_v2"] == ("x", "multiplier", "shift")
        write_golden(program, [("toy image", PIXELS[0])], tmp_path / "golden", formats=("npy",), progress=False)
        (op,) = read_manifest(tmp_path / "golden")["ops"]
        assert (op["kind"], op["function"], op["params"]) == ("ToyScale_v2", "requantize", ["multiplier", "shift"])
        broken = OpKind("ToyScale", OpSchema("ToyScale_v3", TOY.schema.inputs, TOY.schema.attributes, _toy_rule),
                        execute=_toy_execute, function="requantize", version=3,
                        recompute=lambda report, program, op, inputs, outputs: np.zeros_like(outputs[0]))
        with registered_op_kind(broken):
            program.ops[0].kind = "ToyScale_v3"
            with pytest.raises(RuntimeError, match="do not give its output"):
                AccumulatorReport(program).run([PIXELS], progress=False)
    assert "ToyScale_v2" not in INPUT_ROLES


def test_registry_rules():
    with pytest.raises(ValueError, match="'Linear' is already registered; .* new version .*Linear_v2"):
        register_op_kind(OpKind("Linear", get_op_kind("Linear").schema, execute=lambda *a: None, function=None))
    for name in ("Linear", "LisAttentionValues"):
        with pytest.raises(ValueError, match="built in"):
            unregister_op_kind(name)
    with pytest.raises(ValueError, match="not registered"):
        unregister_op_kind("NoSuchKind")
    with pytest.raises(TypeError):
        register_op_kind(TOY.schema)
    with pytest.raises(TypeError):
        OP_KINDS["Toy"] = TOY  # read-only view
    with pytest.raises(ValueError, match="expected an OpSchema of kind 'ToyScale_v2'"):
        OpKind("ToyScale", OpSchema("ToyScale", (), (), _toy_rule), execute=_toy_execute, function=None, version=2)
    for bad in dict(name="toy_scale"), dict(name="Toy_v2"), dict(version=0), dict(function="not a name"):
        arguments = dict(name="Toy", schema=OpSchema("Toy", (), (), _toy_rule), execute=_toy_execute, function=None)
        arguments.update(bad)
        with pytest.raises(ValueError):
            OpKind(**arguments)
    with pytest.raises(SchemaError, match=r"unknown kind 'Lienar' \(did you mean 'Linear'\?\)"):
        get_op_kind("Lienar")
    with pytest.raises(SchemaError, match="unknown kind"):
        check_op("Lienar", {}, [], [], [])


def test_kind_strings_and_versions():
    assert kind_string("Linear") == "Linear" and kind_string("Linear", 2) == "Linear_v2"
    assert parse_kind("Linear") == ("Linear", 1) and parse_kind("LisAttentionValues_v12") == ("LisAttentionValues", 12)
    for bad in ("Linear_v1", "Linear_v0", "linear", "Linear_v", "Linear_2", 3):
        with pytest.raises(ValueError):
            parse_kind(bad)
    assert all(parse_kind(kind) == (OP_KINDS[kind].name, OP_KINDS[kind].version) for kind in BUILTIN_KINDS)


def test_every_builtin_kind_is_complete():
    """Schema, executor, function (or data movement) and, for every arithmetic kind, the report's intermediates."""
    assert BUILTIN_KINDS[:2] == ("Patchify", "Linear") and {"AttentionValues", "LisAttentionValues"} <= set(BUILTIN_KINDS)
    for name in BUILTIN_KINDS:
        kind = OP_KINDS[name]
        assert kind.schema.kind == name and callable(kind.execute) and kind.summary
        assert (kind.function is None) == (kind.recompute is None) == (not kind.intermediates), name
        assert f"| {name} |" in markdown_table()
    values, lis_values = get_op_kind("AttentionValues"), get_op_kind("LisAttentionValues")
    assert [a.name for a in values.schema.attributes] == [a.name for a in lis_values.schema.attributes] == \
        ["heads", "v_zero_point"]
    assert (values.function, lis_values.function) == ("integer_matmul", "lis_attention_values")


COMMITTED_PROGRAM = Path(__file__).resolve().parents[1] / "golden" / "programs" / "digits-fqvit-w8a8a4.intsim"


@pytest.fixture(scope="module")
def digits():
    """The committed digits Program (fqvit-w8a8a4) and 4 held-out images."""
    from intsim.models.digits import digits_heldout

    return load_program(COMMITTED_PROGRAM), np.array(digits_heldout()[0][:4])


def test_report_intermediates_are_the_declared_ones(digits):
    """On the digits Program, each op reports exactly its kind's declared intermediates, in order."""
    from intsim.golden.report import AccumulatorReport

    program, pixels = digits
    result = AccumulatorReport(program).run([pixels], progress=False)
    for entry in result["ops"]:
        names = [q["name"] for q in entry["quantities"] if not q["name"].startswith("output ")]
        assert names == list(get_op_kind(entry["kind"]).intermediates), entry["name"]


def test_the_numba_fusion_table_fuses_the_vit_and_changes_nothing(digits):
    from intsim.interpreter import run_program

    program, pixels = digits
    plan = get_backend("numba").prepare(program).fusions
    assert {(program.ops[start].kind, count) for start, (count, _) in plan.items()} == {
        ("Linear", 2), ("Linear", 3), ("Linear", 5), ("AttentionScores", 4)}
    assert get_backend("numba").prepare(program).fusions is plan  # planned once per Program
    fused = run_program(program, pixels)
    np.testing.assert_array_equal(fused, run_program(program, pixels, fuse=False))
    np.testing.assert_array_equal(fused, run_program(program, pixels, trace=lambda op, inputs, outputs: None))


# ------------------------------------------------------------------------------------------------ backends
def test_the_torch_backend_converts_constants_once_per_program(monkeypatch):
    torch = pytest.importorskip("torch")
    from intsim.backends.torch_backend import TorchBackend
    from intsim.quant.exact import run_exact

    with registered_op_kind(TOY):
        program = toy_program().validate()
        backend = get_backend("torch", device="cpu")
        assert isinstance(backend, TorchBackend) and isinstance(backend, Backend) and backend.fusions == ()
        assert get_backend("torch", device=torch.device("cpu")) is backend
        converted = []
        original = TorchBackend.asarray
        monkeypatch.setattr(TorchBackend, "asarray", lambda self, c: converted.append(c) or original(self, c))
        for _ in range(3):
            run_exact(program, PIXELS)
        assert len(converted) == len(program.constants)  # once, not once per batch
        prepared = backend.prepare(program)
        assert backend.prepare(program) is prepared
        assert all(t.dtype == torch.int64 and t.device.type == "cpu" for t in prepared.constants.values())
        program.constants["toy.multiplier"] = np.array([5], dtype=np.int32)  # a new array: prepared again
        assert backend.prepare(program) is not prepared
        assert int(run_exact(program, PIXELS).max()) == (int(PIXELS.max()) * 5 + 1) >> 1


def test_backends_by_name_and_registration():
    from intsim.backends.numba_backend import FUSIONS, NumbaBackend
    from intsim.interpreter import default_backend, run_program

    numba = get_backend("numba")
    assert numba is default_backend() and isinstance(numba, NumbaBackend) and numba.fusions is FUSIONS
    assert all(isinstance(fusion, Fusion) for fusion in FUSIONS)
    with pytest.raises(ValueError, match="unknown backend 'tpu'; known: .*numba.*torch"):
        get_backend("tpu")
    with pytest.raises(ValueError, match="already registered"):
        register_backend("numba", NumbaBackend)

    class Recording(NumbaBackend):
        name = "recording"

        def __init__(self):
            super().__init__()
            self.fusions = ()  # a backend without fusion
            self.calls = []
            ops = self.ops

            class Ops:
                def __getattr__(_, name):
                    self.calls.append(name)
                    return getattr(ops, name)
            self.ops = Ops()

    register_backend("recording-test", Recording)
    with registered_op_kind(TOY):
        program = toy_program().validate()
        recording = get_backend("recording-test")
        np.testing.assert_array_equal(run_program(program, PIXELS, backend="recording-test"),
                                      run_program(program, PIXELS))
        assert recording.calls == ["requantize"]


def test_array_backend_is_the_protocol():
    backend = ArrayBackend(ops_module=None)
    assert isinstance(backend, Backend) and backend.fusions == ()
    with pytest.raises(NotImplementedError):
        backend.patchify(None, 2)


# ------------------------------------------------------------------------------------------------ AdaLog kinds
def adalog_program() -> Program:
    """Every AdaLog kind in one Program: LogEncode of the pixels as attention probabilities over the 2 patches,
    LogAttentionValues, AsymmetricLinear and LogLinear (over the log codes of the patches)."""
    from intsim.ops import adalog_mantissa_table, adalog_shift_table, adalog_thresholds

    bits, q = 3, 50
    shift, mantissa = adalog_shift_table(bits, q), adalog_mantissa_table(bits, q)
    top = int(shift.max())
    rng = np.random.default_rng(5)
    tensors = {
        "pixels": TensorSpec(8, False, shape=[1, 4, 2], kind="input", scale=1.0),
        "log.thresholds": TensorSpec(64, True, shape=[8], kind="constant"),
        "log.shift": TensorSpec(8, False, shape=[8], kind="constant"),
        "log.mantissa": TensorSpec(16, False, shape=[8], kind="constant"),
        "probs": TensorSpec(4, False),
        "tokens": TensorSpec(8, False, zero_point=3),
        "codes": TensorSpec(4, False),
        "attn": TensorSpec(48, True),
        "fc.weight": TensorSpec(8, False, shape=[3, 4], kind="constant"),
        "fc.weight_zero_point": TensorSpec(32, True, shape=[3], kind="constant"),
        "fc.bias": TensorSpec(32, True, shape=[3], kind="constant"),
        "lin": TensorSpec(32, True),
        "log_fc.bias": TensorSpec(64, True, shape=[3], kind="constant"),
        "out": TensorSpec(48, True, kind="output"),
    }
    constants = {
        "log.thresholds": adalog_thresholds(bits, q, 200.0), "log.shift": shift, "log.mantissa": mantissa,
        "fc.weight": rng.integers(0, 256, (3, 4)).astype(np.uint8), "fc.weight_zero_point": np.array([0, 128, 255]),
        "fc.bias": np.array([-5, 0, 2**31 - 1]), "log_fc.bias": np.array([2**40, -7, 0]),
    }
    tables = ["log.shift", "log.mantissa"]
    ops = [
        Op("LogEncode", "encode", ["pixels", "log.thresholds"], ["probs"], {}),
        Op("Patchify", "patches", ["pixels"], ["tokens"], {"patch": 2}),
        Op("LogAttentionValues", "values", ["probs", "tokens", *tables], ["attn"],
           {"heads": 1, "v_zero_point": 3, "max_shift": top + 1}),
        Op("AsymmetricLinear", "fc", ["tokens", "fc.weight", "fc.weight_zero_point", "fc.bias"], ["lin"],
           {"x_zero_point": 3}),
        Op("LogEncode", "encode_tokens", ["tokens", "log.thresholds"], ["codes"], {}),
        Op("LogLinear", "log_fc", ["codes", "fc.weight", "fc.weight_zero_point", "log_fc.bias", *tables], ["out"],
           {"max_shift": top}),
    ]
    return Program(ops=ops, tensors=tensors, constants=constants, metadata={"model": "adalog-kinds"})


ADALOG_PIXELS = np.random.default_rng(6).integers(0, 256, (3, 1, 4, 2)).astype(np.uint8)


def test_the_adalog_kinds_validate_run_on_both_backends_and_are_reported(tmp_path):
    from intsim.golden.report import AccumulatorReport
    from intsim.interpreter import run_program
    from intsim.ops import logquant as lq

    program = load_program(save_program(adalog_program().validate(), tmp_path / "adalog.intsim"))
    seen = {}
    out = run_program(program, ADALOG_PIXELS, trace=lambda op, inputs, outputs: seen.update({op.name: outputs[0]}))
    c = program.constants
    table = lq.log_weight_table(c["log.shift"], c["log.mantissa"], int(c["log.shift"].max()) + 1)
    probs = lq.log_encode_reference(ADALOG_PIXELS, c["log.thresholds"])
    tokens = ADALOG_PIXELS.reshape(3, 1, 2, 2, 1, 2).transpose(0, 2, 4, 1, 3, 5).reshape(3, 2, 4)
    np.testing.assert_array_equal(seen["encode"], probs)
    heads = tokens.reshape(3, 1, 2, 4).astype(np.int64) - 3  # (B, H = 1, M, d)
    attn = np.einsum("bhnm,bhmd->bhnd", table[probs], heads).swapaxes(1, 2).reshape(3, 4, 4)
    np.testing.assert_array_equal(seen["values"], attn)
    centred_w = c["fc.weight"].astype(np.int64) - c["fc.weight_zero_point"][:, None]
    np.testing.assert_array_equal(seen["fc"], (tokens.astype(np.int64) - 3) @ centred_w.T + c["fc.bias"])
    codes = lq.log_encode_reference(tokens, c["log.thresholds"])
    top = int(c["log.shift"].max())
    want = lq.log_weight_table(c["log.shift"], c["log.mantissa"], top)[codes] @ centred_w.T + c["log_fc.bias"]
    np.testing.assert_array_equal(seen["log_fc"], want)
    torch = pytest.importorskip("torch")
    from intsim.quant.exact import run_exact

    np.testing.assert_array_equal(run_exact(program, ADALOG_PIXELS).numpy(), out)
    result = AccumulatorReport(program).run([ADALOG_PIXELS], progress=False)
    for entry in result["ops"]:
        names = [q["name"] for q in entry["quantities"] if not q["name"].startswith("output ")]
        assert names == list(get_op_kind(entry["kind"]).intermediates), entry["name"]
    assert torch is not None


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.ops[2].attrs.update(max_shift=0), r"'max_shift': expected an int >= max\(shift_table\)"),
    (lambda p: p.ops[2].attrs.update(heads=3), "attribute 'heads'"),
    (lambda p: p.tensors.update(probs=TensorSpec(5, True)), "unsigned log codes"),
    (lambda p: p.tensors.update(probs=TensorSpec(3, False)), r"declared range holding the log codes \[0, 8\]"),
    (lambda p: (p.constants.update({"fc.bias": np.array([0, 0, 2**31])}), p.tensors.update(
        {"fc.bias": TensorSpec(40, True, shape=[3], kind="constant")})), "bias values in"),
    (lambda p: p.constants.update({"fc.weight_zero_point": np.array([0, 0])}), r"weight_zero_point.*shape \(3,\)"),
    (lambda p: p.constants.update({"log.shift": np.zeros(6, np.int64)}), r"shape \(2\*\*b,\)"),
    (lambda p: p.ops[3].attrs.pop("x_zero_point"), "'x_zero_point': missing"),
])
def test_the_adalog_kinds_refuse_bad_programs(edit, message):
    program = adalog_program()
    edit(program)
    if "log.shift" in program.constants:
        program.tensors["log.shift"].shape = list(program.constants["log.shift"].shape)
    for name, array in program.constants.items():
        program.tensors[name].shape = list(array.shape)
    with pytest.raises(ProgramError, match=message):
        program.validate()


def test_the_adalog_kinds_are_builtin():
    order = list(BUILTIN_KINDS)
    new = ["LogEncode", "LogAttentionValues", "AsymmetricLinear", "LogLinear"]
    assert order[order.index("LisAttentionValues") + 1: order.index("Lut")] == new
    assert [get_op_kind(k).function for k in new] == ["log_encode", "log_attention_values", "asymmetric_linear",
                                                      "log_linear"]
    assert get_op_kind("LogLinear").input_roles == ("x", "weight", "weight_zero_point", "bias", "shift_table",
                                                    "mantissa_table")
    assert [o.values for o in get_op_kind("LogLinear").schema.inputs][2:4] == [s.INT32, s.INT64]
    assert [o.values for o in get_op_kind("AsymmetricLinear").schema.inputs][2:4] == [s.INT32, s.INT32]
