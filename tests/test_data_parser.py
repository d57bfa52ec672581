"""The XMC text parser: valid files, every malformed case (file and line named), the writer, and
agreement between the fast vectorised path and the exact line parser."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from harness.datasets import xmc_text
from harness.datasets.data import DataError, read_xmc
from harness.datasets.xmc_text import write_xmc

FIX = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIDEBENCH_CACHE", str(tmp_path / "cache"))


def rows(indptr, indices, values=None):
    out = []
    for i in range(len(indptr) - 1):
        a, b = indptr[i], indptr[i + 1]
        ids = indices[a:b].tolist()
        out.append(ids if values is None else list(zip(ids, np.round(values[a:b].astype(np.float64), 6).tolist())))
    return out


def test_good_xmc_file_with_empty_labels_floats_and_unsorted_ids():
    ds = read_xmc(FIX / "good_xmc.txt")
    assert (ds.num_points, ds.num_features, ds.num_labels) == (4, 6, 5)
    assert rows(ds.labels.indptr, ds.labels.indices) == [[0, 3], [], [4], [1, 2]]
    assert rows(ds.features.indptr, ds.features.indices, ds.features.values) == [
        [(0, 1.0), (2, 0.5), (5, 1.0)],
        [(1, 0.25), (4, 2.0)],
        [(0, 1.5), (3, 0.01)],  # "3:1e-2 0:1.5" on the line: sorted, values follow their ids
        [(5, 3.0)],
    ]
    assert ds.features.indptr.dtype == np.int64 and ds.features.indices.dtype == np.int32
    assert ds.features.values.dtype == np.float32 and ds.labels.values is None


def test_libsvm_variant_infers_or_takes_shape():
    ds = read_xmc(FIX / "good_libsvm.txt")
    assert (ds.num_points, ds.num_features, ds.num_labels) == (4, 6, 5)  # max id + 1
    wider = read_xmc(FIX / "good_libsvm.txt", num_features=10, num_labels=7)
    assert (wider.num_features, wider.num_labels) == (10, 7)
    np.testing.assert_array_equal(wider.features.indices, ds.features.indices)
    with pytest.raises(DataError, match=r"good_libsvm.txt:1: feature id 5 out of range \[0, 4\)"):
        read_xmc(FIX / "good_libsvm.txt", num_features=4)


BAD = [
    ("empty.txt", r"empty.txt: empty file"),
    ("empty_whitespace.txt", r"empty_whitespace.txt: empty file"),
    ("bad_header_fields.txt", r"bad_header_fields.txt:1: bad header '2 4': 2 fields"),
    ("bad_header_token.txt", r"bad_header_token.txt:1: bad header '2 4 x'"),
    ("bad_header_only.txt", r"bad_header_only.txt:1: header declares 3 points but the file has 0"),
    ("bad_header_zero.txt", r"bad_header_zero.txt:1: bad header '0 4 2': points, features and labels must be positive"),
    ("bad_count_fewer.txt", r"bad_count_fewer.txt:3: header declares 3 points but the file has 2"),
    ("bad_count_more.txt", r"bad_count_more.txt:4: header declares 2 points but the file has more"),
    ("bad_feature_range.txt", r"bad_feature_range.txt:3: feature id 4 out of range \[0, 4\)"),
    ("bad_label_range.txt", r"bad_label_range.txt:3: label id 2 out of range \[0, 2\)"),
    ("bad_dup_feature.txt", r"bad_dup_feature.txt:3: duplicate feature id 0"),
    ("bad_dup_label.txt", r"bad_dup_label.txt:3: duplicate label id 1"),
    ("bad_negative_feature.txt", r"bad_negative_feature.txt:3: negative feature id -2"),
    ("bad_negative_label.txt", r"bad_negative_label.txt:2: negative label id -1"),
    ("bad_nonfinite.txt", r"bad_nonfinite.txt:2: non-finite value '1e999' for feature 1"),
    ("bad_nan.txt", r"bad_nan.txt:3: garbage token '2:nan'"),
    ("bad_garbage.txt", r"bad_garbage.txt:3: garbage token 'hello'"),
    ("bad_double_colon.txt", r"bad_double_colon.txt:2: garbage token '1:1:2'"),
    ("bad_value_token.txt", r"bad_value_token.txt:3: garbage token '2:1.2.3'"),
    ("bad_blank_line.txt", r"bad_blank_line.txt:3: blank line"),
    ("bad_nonascii.txt", r"bad_nonascii.txt:3: garbage byte 0xc3"),
]


@pytest.mark.parametrize("name,message", BAD, ids=[b[0] for b in BAD])
def test_malformed_files_name_file_and_line(name, message):
    with pytest.raises(DataError, match=message):
        read_xmc(FIX / name)


def test_data_error_is_a_value_error_and_missing_file_is_not_found():
    assert issubclass(DataError, ValueError)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_xmc(FIX / "nope.txt")


def test_header_flag_is_enforced():
    with pytest.raises(DataError, match=r"good_libsvm.txt:1: bad header"):
        read_xmc(FIX / "good_libsvm.txt", header=True)
    with pytest.raises(DataError, match=r"good_xmc.txt:1: looks like a header"):
        read_xmc(FIX / "good_xmc.txt", header=False)


def test_crlf_and_missing_final_newline_are_accepted(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"2 3 2\r\n0 1:1\r\n1 2:0.5")
    ds = read_xmc(path)
    assert rows(ds.features.indptr, ds.features.indices) == [[1], [2]]


def test_labels_without_features_is_a_point(tmp_path):
    path = tmp_path / "nofeat.txt"
    path.write_bytes(b"2 3 2\n0,1\n1 2:1\n")
    ds = read_xmc(path)
    assert np.diff(ds.features.indptr).tolist() == [0, 1]
    assert rows(ds.labels.indptr, ds.labels.indices) == [[0, 1], [1]]


def _random_rows(rng, n, d, l):
    l_counts = rng.integers(0, 4, n)
    f_counts = rng.integers(0, 8, n)
    f_counts[l_counts == 0] = np.maximum(f_counts[l_counts == 0], 1)  # no blank lines
    labels = [np.sort(rng.choice(l, k, replace=False)) for k in l_counts]
    feats = [np.sort(rng.choice(d, k, replace=False)) for k in f_counts]
    l_indptr = np.concatenate(([0], np.cumsum(l_counts))).astype(np.int64)
    f_indptr = np.concatenate(([0], np.cumsum(f_counts))).astype(np.int64)
    l_ids = np.concatenate(labels).astype(np.int32)
    f_ids = np.concatenate(feats).astype(np.int32)
    values = rng.random(len(f_ids)).astype(np.float32) * rng.choice([1, 10, 1000], len(f_ids))
    return l_indptr, l_ids, f_indptr, f_ids, values


def test_writer_roundtrip_across_many_chunks(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    l_indptr, l_ids, f_indptr, f_ids, values = _random_rows(rng, 3000, 50_000, 300)
    path = tmp_path / "rt.txt"
    write_xmc(path, l_indptr, l_ids, f_indptr, f_ids, values, 50_000, 300, rows_per_block=700)
    monkeypatch.setattr(xmc_text, "CHUNK_BYTES", 4096)  # many chunks: line accounting across them
    ds = read_xmc(path, use_cache=False)
    np.testing.assert_array_equal(ds.labels.indptr, l_indptr)
    np.testing.assert_array_equal(ds.labels.indices, l_ids)
    np.testing.assert_array_equal(ds.features.indptr, f_indptr)
    np.testing.assert_array_equal(ds.features.indices, f_ids)
    # The writer keeps 6 decimals.
    np.testing.assert_allclose(ds.features.values, values, rtol=1e-6, atol=6e-7)


def test_error_in_a_late_chunk_names_the_right_line(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    l_indptr, l_ids, f_indptr, f_ids, values = _random_rows(rng, 2000, 1000, 50)
    path = tmp_path / "late.txt"
    write_xmc(path, l_indptr, l_ids, f_indptr, f_ids, values, 1000, 50)
    lines = path.read_bytes().split(b"\n")
    lines[1700] = lines[1700] + b" 7:x"  # file line 1701 (line 1 is the header)
    path.write_bytes(b"\n".join(lines))
    monkeypatch.setattr(xmc_text, "CHUNK_BYTES", 2048)
    with pytest.raises(DataError, match=r"late.txt:1701: garbage token '7:x'"):
        read_xmc(path, use_cache=False)


def test_fast_path_agrees_with_the_exact_line_parser():
    """Valid text: both paths give the same arrays. The fast path must not be bypassed."""
    rng = np.random.default_rng(3)
    l_indptr, l_ids, f_indptr, f_ids, values = _random_rows(rng, 500, 2000, 100)
    text = xmc_text._format_rows(l_indptr, l_ids, f_indptr, f_ids, values)
    chunk = np.frombuffer(text, dtype=np.uint8)
    fast = xmc_text._fast_chunk(chunk, 2000, 100)
    assert fast is not None
    slow = xmc_text._slow_chunk(text, Path("x"), 1, 2000, 100)
    for name in ("f_counts", "f_ids", "l_counts", "l_ids"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    np.testing.assert_array_equal(fast.f_vals, slow.f_vals)


MUTATIONS = [b"1, 2:1", b" 3 1:1", b"1:1", b"0 :5", b"0 1:", b"0 1:+", b"0 1.5:1", b"0 1:1e", b"0 1e2:3",
             b"0,,1 2:1", b"0, 2:1", b"0 1:1 1:1", b"0 3:1 1:1", b"0 1:.", b"0 1:e5", b"0 1:1e+", b"0 1:-",
             b"0 1:--1", b"0 1:1+1", b"0 1:1.", b"0 1:.5", b"0 1:+5", b"0 1:-2.5e-3", b"00 001:1", b"0\t1:1",
             b"0 1:1\r", b"0 1:1 ,", b"0 1:1 2", b"0 9999999999999999999999:1"]


@pytest.mark.parametrize("line", MUTATIONS)
def test_fast_path_and_exact_parser_agree_on_odd_lines(line):
    """Either both accept with the same result, or the fast path defers and the exact parser
    raises (the fast path never accepts what the exact parser refuses)."""
    text = line + b"\n"
    fast = xmc_text._fast_chunk(np.frombuffer(text, dtype=np.uint8), 10, 5)
    try:
        slow = xmc_text._slow_chunk(text, Path("odd.txt"), 7, 10, 5)
    except DataError as exc:
        assert fast is None, f"fast path accepted {line!r}, exact parser said {exc}"
        assert re.match(r"odd.txt:7: ", str(exc))
        return
    if fast is not None:
        for name in ("f_counts", "f_ids", "f_vals", "l_counts", "l_ids"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)


def test_writer_refuses_values_it_cannot_write(tmp_path):
    indptr = np.asarray([0, 1], dtype=np.int64)
    ids = np.asarray([0], dtype=np.int32)
    for bad in (-1.0, np.inf, 1e13):
        with pytest.raises(ValueError, match="finite values"):
            write_xmc(tmp_path / "w.txt", indptr, ids, indptr, ids, np.asarray([bad], np.float32), 1, 1)


def test_writer_formats_values_compactly(tmp_path):
    indptr = np.asarray([0, 4], dtype=np.int64)
    path = tmp_path / "w.txt"
    write_xmc(path, np.asarray([0, 0], np.int64), np.zeros(0, np.int32), indptr,
              np.asarray([0, 3, 12, 999], np.int32), np.asarray([1.0, 0.25, 0.0000004, 123.5], np.float32), 1000, 1)
    assert path.read_text() == "1 1000 1\n 0:1 3:0.25 12:0 999:123.5\n"


CONTROL = [b"\x0c", b"\x0b", b"\x1c", b"\x1f", b"\x00", b"\x7f", b"\x1b"]


@pytest.mark.parametrize("byte", CONTROL, ids=[f"0x{b[0]:02x}" for b in CONTROL])
def test_control_characters_are_refused_by_both_paths(byte, tmp_path):
    """Python's str.split() reads form feed and friends as spaces; the file must not mean one thing
    to the fast path and another to the exact parser: both refuse it, naming line and column."""
    text = b"0 1:1" + byte + b"2:1\n"
    assert xmc_text._fast_chunk(np.frombuffer(text, dtype=np.uint8), 10, 5) is None
    with pytest.raises(DataError, match=rf"odd.txt:7: control character 0x{byte[0]:02x}.* at column 6"):
        xmc_text._slow_chunk(text, Path("odd.txt"), 7, 10, 5)
    # The whole file: the same message, at the right line.
    path = tmp_path / "ff.txt"
    path.write_bytes(b"2 10 5\n1 3:1\n" + text)
    with pytest.raises(DataError, match=rf"ff.txt:3: control character 0x{byte[0]:02x}.* at column 6"):
        read_xmc(path, use_cache=False)


def test_control_character_in_the_header_is_refused(tmp_path):
    path = tmp_path / "ffh.txt"
    path.write_bytes(b"1\x0c10 5\n0 1:1\n")
    with pytest.raises(DataError, match=r"ffh.txt:1: control character 0x0c \(form feed\) at column 2"):
        read_xmc(path, use_cache=False)


@pytest.mark.parametrize(
    "body, what",
    [
        (b"0 " + b"x" * 1_000_000 + b"\n", "garbage token 'xxxx"),
        (b"0 1:" + b"y" * 1_000_000 + b"\n", "is not a number"),
        (b"0 " + b"9" * 1_000_000 + b":1\n", "feature id 9999"),  # also past Python's 4300-digit int limit
        (b"9" * 1_000_000 + b" 1:1\n", "label id 9999"),
        (b"0 -" + b"9" * 1_000_000 + b":1\n", "negative feature id"),
    ],
)
def test_error_messages_quote_huge_tokens_short(body, what, tmp_path):
    path = tmp_path / "huge.txt"
    path.write_bytes(b"1 1:1\n" + body)  # a data line first: no header to detect
    with pytest.raises(DataError) as info:
        read_xmc(path, use_cache=False)
    message = str(info.value)
    assert what in message and "characters)" in message and len(message) < 400, message[:500]


def test_huge_header_is_quoted_short(tmp_path):
    path = tmp_path / "hh.txt"
    path.write_bytes(b"9" * 100_000 + b" 4 2\n0 1:1\n")
    with pytest.raises(DataError, match=r"hh.txt:1: bad header '9999.*characters\)") as info:
        read_xmc(path, use_cache=False)
    assert len(str(info.value)) < 400


def test_quote_cuts_long_tokens():
    assert xmc_text.quote("abc") == "'abc'"
    assert xmc_text.quote("z" * 1000) == "'" + "z" * 40 + "'... (1,000 characters)"


def test_writer_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the old file (or none) and no temporary file behind."""
    path = tmp_path / "w.txt"
    path.write_bytes(b"old content\n")
    indptr = np.asarray([0, 1], dtype=np.int64)
    ids = np.asarray([0], dtype=np.int32)

    def boom(*args, **kwargs):
        raise MemoryError("out of memory while formatting")

    monkeypatch.setattr(xmc_text, "_format_rows", boom)
    with pytest.raises(MemoryError):
        write_xmc(path, indptr, ids, indptr, ids, np.asarray([1.0], np.float32), 1, 1)
    assert path.read_bytes() == b"old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.txt"]
    monkeypatch.undo()
    write_xmc(path, indptr, ids, indptr, ids, np.asarray([1.0], np.float32), 1, 1)
    assert path.read_text() == "1 1 1\n0 0:1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.txt"]
