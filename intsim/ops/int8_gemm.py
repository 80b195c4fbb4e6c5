"""Exact uint8 x int8 products at VNNI speed: onnxruntime's ``MatMulInteger`` (MLAS), where it is installed.

Integer contract
    ``a``       uint8 codes ``(M, K)`` (activations), a per-tensor zero point ``a_zp`` in ``[0, 255]``.
    ``b``       an int8 weight ``(K, N)`` (``weight.T``; zero point 0), a Program constant.
    result      int32 ``(M, N)``: ``sum_k (a[m, k] - a_zp) * b[k, n]``, EXACT.

Why it is exact
    MLAS sums the raw products ``a * b`` in int32 and subtracts ``a_zp * sum_k b[k, n]``: every partial sum is
    bounded by ``K * 255 * 128`` and the column-sum term by ``K * 255 * 128``, so with ``K <= 65793``
    (:data:`MAX_K`: ``K * 255 * 128 <= 2**31 - 1``) no int32 intermediate can wrap. Integer sums do not depend on
    their order or blocking. The one way the hardware can be inexact is saturation: without VNNI, x86 multiplies
    u8 x s8 pairs with ``vpmaddubsw``, which saturates each pair sum at int16 (``255 * 127 * 2 > 32767``; the
    reason onnxruntime offers ``reduce_range``). VNNI's ``vpdpbusd`` does not saturate. Rather than trust the CPU
    flags, :func:`available` runs a probe once per process: products whose pair sums pass int16 in both
    directions, at one row and at many rows (MLAS picks other kernels for small M), against numpy's int64
    product; any difference turns the path off for the process.

The float32 BLAS path of :mod:`intsim.ops.matmul` stays the portable fallback (no onnxruntime, no VNNI, other
dtypes). Sessions are built once per weight (:func:`weight_product`), run one block of rows per call from the
interpreter's row-block threads (``intra_op_num_threads = 1``, idle threads sleep), and are thread-safe.
"""

from __future__ import annotations

import numpy as np

from intsim._jit import kernel

__all__ = ["MAX_K", "ROWS_PER_BLOCK", "Int8WeightProduct", "available", "digits_of", "row_blocked",
           "row_blocked_digits", "weight_product"]

MAX_K = (2**31 - 1) // (255 * 128)  # 65793: raw u8 x s8 sums of K terms stay inside int32
_AVAILABLE: bool | None = None


class Int8WeightProduct:
    """``(a - a_zp) @ b`` for one int8 weight ``b (K, N)`` and zero point ``a_zp``: :meth:`run` on uint8 row
    blocks ``(R, K)`` returns int32 ``(R, N)`` (module docstring)."""

    def __init__(self, b: np.ndarray, a_zero_point: int):
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper

        if b.dtype != np.int8 or b.ndim != 2 or not 0 <= a_zero_point <= 255 or b.shape[0] > MAX_K:
            raise ValueError(f"int8 weight product: an int8 (K, N) weight with K <= {MAX_K} and a zero point in "
                             f"[0, 255] needed, got {b.dtype} {b.shape} and {a_zero_point}")
        k, n = b.shape
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "b", "a_zero_point"], ["y"])], "int8_weight_product",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, ["rows", k])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, ["rows", n])],
            [numpy_helper.from_array(np.ascontiguousarray(b), "b"),
             numpy_helper.from_array(np.array(a_zero_point, dtype=np.uint8), "a_zero_point")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = min(model.ir_version, 9)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                    providers=["CPUExecutionProvider"])
        self.shape = (k, n)

    def run(self, a: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"a": np.ascontiguousarray(a)})[0]


def _probe() -> bool:
    """Do u8 x s8 products come out exact here, pair sums beyond int16 included (module docstring)?"""
    rng = np.random.default_rng(0)
    k, n = 256, 32
    b = np.where(rng.random((k, n)) < 0.5, np.int8(127), np.int8(-128)).astype(np.int8)
    b[:, 0], b[:, 1] = 127, -128  # every pair sum 255 * 127 * 2 / 255 * -128 * 2: beyond int16 both ways
    for rows in (1, 200):
        a = np.full((rows, k), 255, dtype=np.uint8)
        a[rows // 2 :] = rng.integers(200, 256, size=(rows - rows // 2, k), dtype=np.uint8)
        for zero_point in (0, 255, 37):
            got = Int8WeightProduct(b, zero_point).run(a)
            if not np.array_equal(got.astype(np.int64), (a.astype(np.int64) - zero_point) @ b.astype(np.int64)):
                return False
    return True


def available() -> bool:
    """Is the int8 path usable in this process: onnxruntime and onnx installed, and the probe exact?"""
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            _AVAILABLE = False
        else:
            _AVAILABLE = _probe()
    return _AVAILABLE


def weight_product(b: np.ndarray, a_zero_point: int) -> Int8WeightProduct | None:
    """The product object for ``b`` and ``a_zero_point``, or ``None`` when the int8 path does not apply here (no
    onnxruntime, a failed probe, a weight that is not int8 or K beyond :data:`MAX_K`, a zero point outside uint8)."""
    if not available() or b.dtype != np.int8 or b.ndim != 2 or b.shape[0] > MAX_K or not 0 <= a_zero_point <= 255:
        return None
    return Int8WeightProduct(b, int(a_zero_point))


ROWS_PER_BLOCK = 256  # rows per onnxruntime call: the call's fixed cost amortised, the int32 block still in cache


def row_blocked(a: np.ndarray, product: Int8WeightProduct, finish) -> None:
    """``finish(acc, start, stop)`` for every block of :data:`ROWS_PER_BLOCK` rows of ``a`` (uint8 ``(M, K)``), with
    ``acc`` the block's exact int32 ``(a - a_zp) @ b`` (no bias), on the interpreter's row-block threads; the
    contract of :func:`intsim.ops.matmul.row_blocked_product`, so the fused epilogues serve both."""
    from intsim.ops._threads import run_row_ranges

    run_row_ranges(a.shape[0], ROWS_PER_BLOCK, lambda start, stop: finish(product.run(a[start:stop]), start, stop))


@kernel
def _split_digits(block, planes):
    """``planes[d, r, k] = (block[r, k] >> 8 d) & 255``: base-256 digits of non-negative codes (uint8 planes)."""
    for d in range(planes.shape[0]):
        for r in range(block.shape[0]):
            for k in range(block.shape[1]):
                planes[d, r, k] = (np.uint64(block[r, k]) >> np.uint64(8 * d)) & np.uint64(255)


@kernel
def _combine_digits(partials, acc):
    """``acc = sum_d int64(partials[d]) << 8 d``: the digit products recombined (exact in int64: proved bound)."""
    for r in range(acc.shape[0]):
        for n in range(acc.shape[1]):
            total = np.int64(0)
            for d in range(partials.shape[0]):
                total += np.int64(partials[d, r, n]) << np.int64(8 * d)
            acc[r, n] = total


def digits_of(largest: int) -> int:
    """How many base-256 digits a non-negative code up to ``largest`` has (at least one)."""
    return max(1, (int(largest).bit_length() + 7) // 8)


def row_blocked_digits(a: np.ndarray, digits: int, product: Int8WeightProduct, finish) -> None:
    """:func:`row_blocked` for non-negative codes wider than uint8 (unsigned ``a``, e.g. AdaLog's gathered log weights
    ``W[x]`` before fc2) against an int8 weight with zero point 0: ``a = sum_d a_d 256**d`` with uint8 digits
    ``a_d``, ``a @ b = sum_d (a_d @ b) 256**d``; each digit product is an exact int32 product (module docstring) and
    the sum is formed in int64, where the caller has proved the whole product's bound. ``finish`` gets int64."""
    from intsim.ops._threads import run_row_ranges
    from intsim.ops.matmul import workspace

    def work(start, stop):
        block = a[start:stop]
        planes = workspace("int8_digit_planes", (digits, stop - start, a.shape[1]), np.uint8)
        _split_digits(block, planes)
        partials = workspace("int8_digit_products", (digits, stop - start, product.shape[1]), np.int32)
        for d in range(digits):
            partials[d] = product.run(planes[d])
        acc = workspace("int8_digit_acc", (stop - start, product.shape[1]), np.int64)
        _combine_digits(partials, acc)
        finish(acc, start, stop)

    run_row_ranges(a.shape[0], ROWS_PER_BLOCK, work)
