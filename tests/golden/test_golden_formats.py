"""The three file formats: exact round trips at every width, the $readmemh conventions, and readable errors."""

from __future__ import annotations

import numpy as np
import pytest

from intsim.golden.formats import FORMATS, encode, hex_digits, parse_formats, read_tensor, storage_dtype, width_of_range

WIDTHS = [(1, False), (4, True), (5, False), (8, False), (8, True), (12, True), (16, False), (20, True), (22, True),
          (31, True), (32, False), (32, True), (46, True), (63, False), (64, True)]


def _extremes(bits: int, signed: bool, rng) -> np.ndarray:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    values = [low, high, 0, min(1, high), max(-1, low), low + 1 if low < high else low]
    values += [int(v) for v in rng.integers(low, high, size=30, endpoint=True)]
    return np.array(values, dtype=np.int64).reshape(6, 6)


@pytest.mark.parametrize("bits,signed", WIDTHS)
def test_every_format_reads_back_the_same_array(tmp_path, bits, signed):
    array = _extremes(bits, signed, np.random.default_rng(bits))
    for fmt in FORMATS:
        path = tmp_path / f"t.{fmt}"
        path.write_bytes(encode(array, fmt, bits, signed, name="t"))
        back = read_tensor(path, fmt, shape=array.shape, bits=bits, signed=signed)
        np.testing.assert_array_equal(back, array, err_msg=f"{fmt} at {bits} bits signed={signed}")
    assert np.load(tmp_path / "t.npy").dtype == storage_dtype(bits, signed)
    assert (tmp_path / "t.bin").stat().st_size == array.size * storage_dtype(bits, signed).itemsize


def test_hex_is_twos_complement_at_the_nibble_width_one_element_per_line():
    text = encode(np.array([-1, 0, 5, -(2**21), 2**21 - 1]), "hex", 22, True, name="acc").decode()
    assert text == "ffffff\n000000\n000005\ne00000\n1fffff\n"  # 22 bits -> 6 digits, sign-extended to 24 bits
    assert encode(np.array([[16, 0], [3, 31]]), "hex", 5, False, name="p") == b"10\n00\n03\n1f\n"  # C order
    assert encode(np.array([], dtype=np.int64), "hex", 8, False, name="e") == b""
    assert hex_digits(1) == 1 and hex_digits(4) == 1 and hex_digits(5) == 2 and hex_digits(64) == 16


def test_binary_is_packed_little_endian():
    data = encode(np.array([1, -2]), "bin", 12, True, name="x")  # 12 bits -> int16 lanes
    assert data == b"\x01\x00\xfe\xff"


def test_reader_accepts_what_a_simulator_writes(tmp_path):
    path = tmp_path / "dut.hex"
    path.write_bytes(b"FF\r\n7\r\n80")  # upper case, leading zeros dropped, CRLF, no final newline
    np.testing.assert_array_equal(read_tensor(path, "hex", shape=(3,), bits=8, signed=True), [-1, 7, -128])


def test_values_outside_the_declared_width_are_refused():
    with pytest.raises(ValueError, match=r"tensor 'acc' holds values in \[0, 256\], outside its declared 8-bit"):
        encode(np.array([0, 256]), "npy", 8, False, name="acc")
    with pytest.raises(ValueError, match="cannot be stored"):
        storage_dtype(64, False)


@pytest.mark.parametrize("content,line", [(b"00\n0x1\n", 2), (b"00\n01\n// c\n", 3), (b"00\n\n01\n", 2),
                                          (b"000\n", 1), (b"0g\n", 1)])
def test_malformed_hex_names_file_and_line(tmp_path, content, line):
    path = tmp_path / "bad.hex"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"bad\.hex: line {line}: .* is not 1 to 2 hex digits"):
        read_tensor(path, "hex", shape=(3,), bits=8, signed=False)


def test_wrong_sizes_and_shapes_name_the_file(tmp_path):
    (tmp_path / "a.hex").write_bytes(b"00\n01\n")
    with pytest.raises(ValueError, match=r"a\.hex: 2 lines, expected 3"):
        read_tensor(tmp_path / "a.hex", "hex", shape=(3,), bits=8, signed=False)
    (tmp_path / "a.bin").write_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match=r"a\.bin: 5 bytes, expected 3 elements of 2 bytes"):
        read_tensor(tmp_path / "a.bin", "bin", shape=(3,), bits=16, signed=True)
    np.save(tmp_path / "a.npy", np.zeros((3, 1), dtype=np.int8))
    with pytest.raises(ValueError, match=r"a\.npy: shape \(3, 1\), expected \(3,\)"):
        read_tensor(tmp_path / "a.npy", "npy", shape=(3,), bits=8, signed=True)
    (tmp_path / "b.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"b\.npy: not a readable \.npy file"):
        read_tensor(tmp_path / "b.npy", "npy", shape=(3,), bits=8, signed=True)
    with pytest.raises(ValueError, match=r"c\.npy: no such file"):
        read_tensor(tmp_path / "c.npy", "npy", shape=(3,), bits=8, signed=True)


def test_format_lists_and_widths():
    assert parse_formats("hex, npy") == ("npy", "hex")
    with pytest.raises(ValueError, match="choose one or more of npy, hex, bin"):
        parse_formats("npy,vcd")
    assert width_of_range(-1, 0) == (1, True) and width_of_range(-129, 127) == (9, True)
    assert width_of_range(0, 255) == (8, False) and width_of_range(0, 0) == (1, False)
