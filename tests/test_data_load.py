"""Cache, manifest, `load(spec)`, the real shared data sets and `slidebench data ...`."""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.commands import data as data_cmd
from harness.datasets import data as hdata
from harness.datasets.data import DataError, DatasetSpec, load, load_manifest, read_xmc

FIX = Path(__file__).parent / "fixtures" / "data"
REAL = os.environ.get("SLIDEBENCH_DATA")
realdata = pytest.mark.skipif(not REAL, reason="SLIDEBENCH_DATA is not set")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIDEBENCH_CACHE", str(tmp_path / "cache"))


def same(a: hdata.Dataset, b: hdata.Dataset) -> None:
    assert (a.num_points, a.num_features, a.num_labels) == (b.num_points, b.num_features, b.num_labels)
    for x, y in ((a.features, b.features), (a.labels, b.labels)):
        np.testing.assert_array_equal(x.indptr, y.indptr)
        np.testing.assert_array_equal(x.indices, y.indices)
        if x.values is None:
            assert y.values is None
        else:
            np.testing.assert_array_equal(x.values, y.values)
            assert x.values.dtype == y.values.dtype


def cache_entries() -> list[Path]:
    return sorted(hdata.cache_dir().glob("*.npz"))


# ---------------------------------------------------------------------------------------- cache


def test_cache_roundtrip_is_identical_and_used(monkeypatch):
    first = read_xmc(FIX / "good_xmc.txt")
    assert len(cache_entries()) == 1
    # A cache hit must not parse: make parsing impossible and read again.
    monkeypatch.setattr(hdata, "parse_xmc", lambda *a, **k: pytest.fail("parsed despite a cache entry"))
    second = read_xmc(FIX / "good_xmc.txt")
    same(first, second)


def test_cache_is_keyed_by_content(tmp_path):
    path = tmp_path / "f.txt"
    shutil.copy(FIX / "good_xmc.txt", path)
    a = read_xmc(path)
    path.write_bytes(path.read_bytes().replace(b"5:3", b"5:4"))
    b = read_xmc(path)
    assert a.features.values[-1] == 3 and b.features.values[-1] == 4
    assert len(cache_entries()) == 2


def test_parse_options_are_part_of_the_key():
    a = read_xmc(FIX / "good_libsvm.txt")
    b = read_xmc(FIX / "good_libsvm.txt", num_features=10)
    assert (a.num_features, b.num_features) == (6, 10)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "wrong_arrays"])
def test_corrupt_cache_entry_is_ignored_and_rebuilt(damage, caplog):
    good = read_xmc(FIX / "good_xmc.txt")
    (entry,) = cache_entries()
    if damage == "garbage":
        entry.write_bytes(b"not a zip file")
    elif damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:200])
    else:  # a valid npz whose arrays break the CSR invariants
        np.savez(entry, format=np.asarray([1]), train_f_indptr=np.asarray([0, 5]), train_shape=np.asarray([1, 2, 3]))
    with caplog.at_level(logging.WARNING, logger="harness.datasets.data"):
        again = read_xmc(FIX / "good_xmc.txt")
    assert "corrupt cache entry" in caplog.text
    same(good, again)
    # Rebuilt: the next read is a clean hit.
    caplog.clear()
    same(good, read_xmc(FIX / "good_xmc.txt"))
    assert "corrupt" not in caplog.text


def test_cache_writes_leave_no_temporary_files():
    read_xmc(FIX / "good_xmc.txt")
    assert [p.name for p in hdata.cache_dir().iterdir() if not p.name.endswith(".npz")] == []


# ------------------------------------------------------------------------------------- manifest


def test_manifest_entries():
    manifest = load_manifest()
    assert {"bibtex", "delicious", "delicious-200k", "amazon-670k", "wikilshtc-325k", "eurlex-4k"} <= set(manifest)
    amazon = manifest["amazon-670k"]
    assert (amazon.train.points, amazon.test.points) == (490_449, 153_025)
    assert (amazon.train.features, amazon.train.labels) == (135_909, 670_091)
    assert manifest["delicious-200k"].train.labels == 205_443
    assert manifest["delicious"].train.sha256.startswith("005c44b4")
    assert amazon.train.sha256 is None and "XMLRepository" in amazon.get


def test_manifest_refuses_unknown_keys(tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text('[datasets.x]\ntitle="t"\nsource="s"\nget="g"\ncolour="red"\n')
    with pytest.raises(DataError, match=r"datasets.x: unknown key\(s\) colour"):
        load_manifest(bad)
    bad.write_text('[datasets.x]\ntitle="t"\nsource="s"\nget="g"\n[datasets.x.train]\nfile="a"\npoints=-1\n'
                   'features=1\nlabels=1\n[datasets.x.test]\nfile="b"\npoints=1\nfeatures=1\nlabels=1\n')
    with pytest.raises(DataError, match=r"datasets.x.train.points: must be a positive integer"):
        load_manifest(bad)


def test_dataset_spec_validation():
    with pytest.raises(ValueError, match="exactly one"):
        DatasetSpec()
    with pytest.raises(ValueError, match="exactly one"):
        DatasetSpec(name="delicious", synthetic="tiny")
    with pytest.raises(ValueError, match="scale"):
        DatasetSpec(synthetic="tiny", scale=0)
    with pytest.raises(ValueError, match="synthetic data only"):
        DatasetSpec(name="delicious", seed=3)
    assert DatasetSpec(synthetic="tiny", scale=0.5, seed=2).label == "synthetic:tiny@0.5/s2"


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"amazon-670k train file not found: .*Get it from: .*XMLRepository"):
        load(DatasetSpec(name="amazon-670k"), tmp_path)


def test_no_data_dir_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SLIDEBENCH_DATA", raising=False)
    with pytest.raises(DataError, match="no data directory"):
        load(DatasetSpec(name="delicious"))


def test_unknown_name_lists_the_manifest(tmp_path):
    with pytest.raises(DataError, match=r"unknown data set 'nope'.*delicious"):
        load(DatasetSpec(name="nope"), tmp_path)


def test_checksum_and_size_are_verified(tmp_path):
    """A file of the right name but different bytes is refused (size first, then sha256)."""
    (tmp_path / "delicious").mkdir()
    fake = tmp_path / "delicious" / "delicious_train.txt"
    fake.write_bytes(b"1 500 983\n1 2:1\n")
    with pytest.raises(DataError, match=r"delicious_train.txt: 16 bytes, the manifest expects 2349314"):
        load(DatasetSpec(name="delicious"), tmp_path)
    # Same size, different bytes: the sha256 check catches it.
    fake.write_bytes(b"1 500 983\n" + b"1 2:1" + b" " * (2349314 - 16) + b"\n")
    with pytest.raises(DataError, match=r"sha256 [0-9a-f]{64} does not match"):
        load(DatasetSpec(name="delicious"), tmp_path)


# ------------------------------------------------------------------------------------ real data


@realdata
@pytest.mark.realdata
@pytest.mark.parametrize(
    "name,train_pts,test_pts,features,labels,nnz,lpp,unlabeled",
    [
        # /work/shared/datasets/README.md: shapes, train nnz/point, labels/point; 14 unlabeled in Delicious.
        ("delicious", 12_920, 3_185, 500, 983, 18.5, 19.0, (10, 4)),
        ("bibtex", 4_880, 2_515, 1_836, 159, 68.5, 2.4, (0, 0)),
    ],
)
def test_real_data_matches_the_readme(name, train_pts, test_pts, features, labels, nnz, lpp, unlabeled):
    train, test = load(DatasetSpec(name=name), REAL)
    assert (train.num_points, test.num_points) == (train_pts, test_pts)
    for ds in (train, test):
        assert (ds.num_features, ds.num_labels) == (features, labels)
        for m in (ds.features, ds.labels):  # sorted and unique within every row
            d = np.diff(m.indices.astype(np.int64))
            inner = np.ones(len(d), dtype=bool)
            inner[m.indptr[1:-1][m.indptr[1:-1] > 0] - 1] = False
            assert np.all(d[inner[: len(d)]] > 0)
    s = train.stats()
    assert round(s.nnz_per_point, 1) == nnz
    assert round(s.labels_per_point, 1) == pytest.approx(lpp, abs=0.05)
    assert (s.points_without_labels, test.stats().points_without_labels) == unlabeled
    assert np.all(train.features.values == 1.0)  # binary bag of words
    whole = (train.labels.nnz + test.labels.nnz) / (train_pts + test_pts)
    # The repository's table rounds differently (19.02 here vs its 19.03 for Delicious).
    assert whole == pytest.approx(load_manifest()[name].published["avg_labels_per_point"], abs=0.015)
    # Second load: from the cache, identical.
    again, _ = load(DatasetSpec(name=name), REAL)
    same(train, again)


# ------------------------------------------------------------------------------------------ CLI


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="slidebench")
    data_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@realdata
@pytest.mark.realdata
def test_cli_info_prints_measured_statistics(capsys):
    assert run_cli("data", "info", "delicious", "--data-dir", REAL) == 0
    out = capsys.readouterr().out
    assert "train      12,920        500        983      18.54      19.05        10" in out
    assert "test        3,185        500        983" in out
    assert "whole set: 16,105 points, 19.02 labels/point" in out


@realdata
@pytest.mark.realdata
def test_cli_verify_real_data(capsys):
    assert run_cli("data", "verify", "delicious", "bibtex", "--data-dir", REAL) == 0
    out = capsys.readouterr().out
    assert out.count("OK ") == 4
    assert run_cli("data", "verify", "amazon-670k", "--data-dir", REAL) == 1  # named but missing


def test_cli_synth_writes_parseable_files(tmp_path, capsys):
    assert run_cli("data", "synth", "tiny", "--scale", "0.1", "--seed", "3", "--out", str(tmp_path)) == 0
    train_file = read_xmc(tmp_path / "tiny_train.txt")
    from harness.datasets import synth

    train, _ = synth.generate("tiny", 0.1, 3)
    np.testing.assert_array_equal(train_file.features.indices, train.features.indices)
    np.testing.assert_array_equal(train_file.labels.indices, train.labels.indices)
    np.testing.assert_allclose(train_file.features.values, train.features.values, atol=6e-7)
    assert run_cli("data", "info", "synthetic:tiny", "--scale", "0.1", "--seed", "3") == 0
    assert "synthetic:tiny@0.1/s3" in capsys.readouterr().out


def test_non_utf8_manifest_names_the_file_and_line(tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_bytes(b'[datasets.x]\ntitle = "caf\xe9"\n')
    with pytest.raises(DataError, match=r"m.toml:2: not UTF-8 text \(byte 0xe9 at column 13\)"):
        load_manifest(bad)
    bad.write_text("[datasets.x\n")
    with pytest.raises(DataError, match=r"m.toml: not valid TOML"):
        load_manifest(bad)


def test_cli_synth_out_is_written_atomically(tmp_path, monkeypatch):
    """An interrupted `data synth --out` leaves the previous file, not a truncated one."""
    from harness.datasets import xmc_text

    old = tmp_path / "tiny_train.txt"
    old.write_bytes(b"previous\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(xmc_text, "_format_rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_cli("data", "synth", "tiny", "--scale", "0.1", "--out", str(tmp_path))
    assert old.read_bytes() == b"previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "tiny_train.txt"]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_parsing_reports_progress_on_a_terminal_only(tmp_path, monkeypatch):
    from harness.datasets import xmc_text

    path = tmp_path / "many.txt"
    path.write_text("400 10 5\n" + "".join(f"{i % 5} {i % 10}:1\n" for i in range(400)))
    monkeypatch.setattr(xmc_text, "CHUNK_BYTES", 1024)  # several chunks, one update each
    monkeypatch.setattr(hdata.Progress, "AFTER_S", 0.0)
    monkeypatch.setattr(hdata.Progress, "EVERY_S", 0.0)
    quiet = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", quiet)
    read_xmc(path, use_cache=False)
    assert quiet.getvalue() == ""
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    read_xmc(path, use_cache=False)
    lines = tty.getvalue().splitlines()
    assert len(lines) >= 3 and "many.txt" in lines[0]
    assert re.search(r"\d+/400 points \(\d+%, ETA \d+s\)", lines[0]), lines
    assert "400/400 points (100%" in lines[-2] and "done in" in lines[-1]
