"""tools/mulan_sets.py: Mulan sets from the scikit-multilearn 0.0.1 sdist, without the network.

Each test builds a tiny fake sdist (a tar.gz with `.dump.bz2` members laid out as in the real one)
and runs the converter on it. The members are pickled the way Python 2 pickled numpy arrays (byte
strings as BINSTRING, numpy.core.multiarray._reconstruct), because that is what the real archive
holds and what the restricted unpickler must accept; Python 3's own protocol 2 would instead name
_codecs.encode, which the converter rightly refuses.
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.util
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from harness.datasets.data import DatasetSpec, load, read_xmc

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "mulan_sets.py"
REAL = os.environ.get("SLIDEBENCH_DATA")


def _import_tool():
    spec = importlib.util.spec_from_file_location("mulan_sets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mulan = _import_tool()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIDEBENCH_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------- a fake sdist


class Py2StylePickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    """Writes bytes as Python 2 wrote its str (SHORT_BINSTRING / BINSTRING), not as a call."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    out = io.BytesIO()
    Py2StylePickler(out, protocol=2).dump(obj)
    # GLOBAL names are lines of text: give _reconstruct the module name numpy 1 (and Python 2) used.
    return out.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def member(X, y) -> bytes:
    return bz2.compress(py2_pickle({"X": np.asarray(X), "y": np.asarray(y)}))


# A set spelled with a capital, like the archive's Corel5k. Train: a point with labels and features,
# one with a label but no features, one with features but no labels (a line starting with a space).
TOY_TRAIN = member([[0, 2, 0], [0, 0, 0], [1, 0, 1]], [[1, 0], [0, 1], [0, 0]])
TOY_TRAIN_TEXT = b"3 3 2\n0 1:2\n1\n 0:1 2:1\n"
# Test: values that are not integral are written as repr(float), which reads back exactly.
TOY_TEST = member([[0.5, 0.0, 0.25], [0.0, 0.0, 0.0]], [[1, 1], [0, 0]])
TOY_TEST_TEXT = b"2 3 2\n0,1 0:0.5 2:0.25\n \n"
OTHER = {"other-train": member([[1]], [[1]]), "other-test": member([[1]], [[1]])}


def fake_sdist(path: Path, members: dict[str, bytes]) -> Path:
    """A tar.gz holding `members` (stem-split -> bz2 bytes) where the real sdist has them."""
    entries = {"scikit-multilearn-0.0.1/setup.py": b"raise SystemExit('never run')\n"}
    entries.update({f"{mulan.MEMBER_DIR}{stem}.dump.bz2": data for stem, data in members.items()})
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def pins(archive: Path) -> dict:
    """main()'s keyword arguments that make it accept `archive` instead of the pinned sdist."""
    data = archive.read_bytes()
    return {"sdist_bytes": len(data), "sdist_sha256": hashlib.sha256(data).hexdigest()}


@pytest.fixture
def toy_archive(tmp_path) -> Path:
    return fake_sdist(tmp_path / "sk.tgz", {"Toy-train": TOY_TRAIN, "Toy-test": TOY_TEST, **OTHER})


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []


# -------------------------------------------------------------------------------- conversion


def test_writes_the_exact_xmc_text(tmp_path, toy_archive, capsys):
    out = tmp_path / "data"
    assert mulan.main([str(out), "--archive", str(toy_archive), "toy"], **pins(toy_archive)) == 0
    assert (out / "toy" / "toy_train.txt").read_bytes() == TOY_TRAIN_TEXT
    assert (out / "toy" / "toy_test.txt").read_bytes() == TOY_TEST_TEXT
    assert files_under(out) == ["toy", "toy/toy_test.txt", "toy/toy_train.txt"]  # no temporary files
    printed = capsys.readouterr().out
    digest = hashlib.sha256(TOY_TRAIN_TEXT).hexdigest()
    assert f"toy_train.txt  {len(TOY_TRAIN_TEXT)} bytes  sha256 {digest}  not in the manifest" in printed
    # slidebench's own parser reads it back: the empty-labels and empty-features lines included.
    train = read_xmc(out / "toy" / "toy_train.txt", header=True)
    assert train.labels.indptr.tolist() == [0, 1, 2, 2] and train.labels.indices.tolist() == [0, 1]
    assert train.features.indptr.tolist() == [0, 1, 1, 3] and train.features.values.tolist() == [2, 1, 1]


def test_set_names_come_from_the_archive(tmp_path):
    """Names are the archive's, lowercased (Toy -> toy); only sets with both splits count."""
    archive = fake_sdist(tmp_path / "sk.tgz", {"Toy-train": TOY_TRAIN, "Toy-test": TOY_TEST, **OTHER})
    with tarfile.open(archive) as tar:
        assert mulan.sets_in(tar) == {"toy": "Toy", "other": "other"}
    half = fake_sdist(
        tmp_path / "half.tgz", {"Toy-train": TOY_TRAIN, "Half-train": TOY_TRAIN, "Toy-test": TOY_TEST}
    )
    with tarfile.open(half) as tar:
        assert mulan.sets_in(tar) == {"toy": "Toy"}
    assert set(mulan.convert(archive.read_bytes(), ["other"])) == {
        "other/other_train.txt",
        "other/other_test.txt",
    }


def test_unknown_name_lists_what_the_archive_has(tmp_path, toy_archive, capsys):
    assert (
        mulan.main([str(tmp_path / "d"), "--archive", str(toy_archive), "toy", "nope"], **pins(toy_archive))
        == 1
    )
    assert "not in the archive: nope; it has: other, toy" in capsys.readouterr().err
    assert files_under(tmp_path / "d") == []


def test_the_cli_runs_as_a_script(tmp_path, toy_archive):
    """The real command line in a fresh interpreter, with only the archive's pins replaced."""
    out = tmp_path / "data"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import mulan_sets; "
        "sys.exit(mulan_sets.main(sys.argv[4:], sdist_bytes=int(sys.argv[2]), sdist_sha256=sys.argv[3]))"
    )
    p = pins(toy_archive)
    argv = [
        str(SCRIPT.parent),
        str(p["sdist_bytes"]),
        p["sdist_sha256"],
        str(out),
        "--archive",
        str(toy_archive),
    ]
    command = [sys.executable, "-c", code, *argv, "toy", "other"]
    run = subprocess.run(command, check=False, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "archive verified" in run.stderr
    assert (out / "toy" / "toy_train.txt").read_bytes() == TOY_TRAIN_TEXT
    assert (out / "other" / "other_test.txt").read_bytes() == b"1 1 1\n0 0:1\n"


def test_download_is_verified_before_use(tmp_path, toy_archive, monkeypatch, capsys):
    """Without --archive the pinned URL is fetched (here: a fake urlopen) and verified."""
    asked = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO(toy_archive.read_bytes())

    monkeypatch.setattr(mulan.urllib.request, "urlopen", fake_urlopen)
    assert mulan.main([str(tmp_path / "d"), "toy"], **pins(toy_archive)) == 0
    assert asked == [mulan.SDIST_URL]
    assert f"downloading {mulan.SDIST_URL}" in capsys.readouterr().err
    # A download longer than the pinned size is cut off and refused.
    assert mulan.main([str(tmp_path / "e"), "toy"], sdist_bytes=100, sdist_sha256="0" * 64) == 1
    assert "more than the expected 100 bytes" in capsys.readouterr().err
    assert files_under(tmp_path / "e") == []


# --------------------------------------------------------------------------------- refusals


def test_wrong_sha256_is_refused_before_anything_is_written(tmp_path, toy_archive):
    """The plain command line keeps the pinned values: the fake archive is not the real sdist."""
    out = tmp_path / "data"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--archive", str(toy_archive), "toy"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    got = hashlib.sha256(toy_archive.read_bytes()).hexdigest()
    assert f"expected {mulan.SDIST_BYTES} bytes with sha256 {mulan.SDIST_SHA256}" in run.stderr
    assert f"got {toy_archive.stat().st_size} bytes with sha256 {got}" in run.stderr
    assert not out.exists()


def test_a_pickle_naming_another_global_is_refused(tmp_path):
    """A member that would call os.system is refused at the lookup: nothing runs, nothing is written."""
    marker = tmp_path / "ran"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()  # protocol 0: os.system("touch ...")
    archive = fake_sdist(tmp_path / "sk.tgz", {"Toy-train": TOY_TRAIN, "Toy-test": bz2.compress(evil)})
    out = tmp_path / "data"
    with pytest.raises(mulan.ConversionError, match=r"Toy-test.dump.bz2: refused global os.system"):
        mulan.convert(archive.read_bytes(), ["toy"])
    assert mulan.main([str(out), "--archive", str(archive), "toy"], **pins(archive)) == 1
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize(
    "data,message",
    [
        ({"X": np.zeros(3), "y": np.zeros((3, 2))}, r"X must be a 2-D numeric array, got ndarray \(3,\)"),
        ({"X": np.zeros((3, 2)), "y": np.zeros((2, 2))}, "X has 3 rows but y has 2"),
        ({"X": np.zeros((1, 2)), "y": np.array([[0, 2]])}, "y holds values other than 0 and 1"),
        ({"X": np.array([[np.nan]]), "y": np.array([[1]])}, "X holds NaN or infinite values"),
        ({"X": np.array([["a"]]), "y": np.array([[1]])}, "X must be a 2-D numeric array"),
        ({"X": np.zeros((1, 1))}, "expected a dict with keys 'X' and 'y'"),
    ],
)
def test_bad_shapes_and_values_are_refused(tmp_path, data, message):
    archive = fake_sdist(
        tmp_path / "sk.tgz", {"Toy-train": bz2.compress(py2_pickle(data)), "Toy-test": TOY_TEST}
    )
    with pytest.raises(mulan.ConversionError, match=message):
        mulan.convert(archive.read_bytes(), ["toy"])
    assert mulan.main([str(tmp_path / "d"), "--archive", str(archive), "toy"], **pins(archive)) == 1
    assert files_under(tmp_path / "d") == []


def test_train_and_test_must_agree_on_widths(tmp_path):
    archive = fake_sdist(
        tmp_path / "sk.tgz", {"Toy-train": TOY_TRAIN, "Toy-test": member([[1, 0]], [[1, 0]])}
    )
    with pytest.raises(
        mulan.ConversionError, match=r"toy: \(features, labels\) differ: train \(3, 2\), test \(2, 2\)"
    ):
        mulan.convert(archive.read_bytes(), ["toy"])


def test_manifest_values_are_checked_before_writing(tmp_path, toy_archive, capsys):
    good = hashlib.sha256(TOY_TRAIN_TEXT).hexdigest()
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        f'[datasets.toy.train]\nfile = "toy/toy_train.txt"\nbytes = {len(TOY_TRAIN_TEXT)}\n'
        f'sha256 = "{good}"\n'
    )
    args = [str(tmp_path / "d"), "--archive", str(toy_archive), "toy"]
    assert mulan.main(args, **pins(toy_archive), manifest_path=manifest) == 0
    assert (
        f"toy_train.txt  {len(TOY_TRAIN_TEXT)} bytes  sha256 {good}  matches the manifest"
        in capsys.readouterr().out
    )

    manifest.write_text(f'[datasets.toy.train]\nfile = "toy/toy_train.txt"\nsha256 = "{"0" * 64}"\n')
    args[0] = str(tmp_path / "e")
    assert mulan.main(args, **pins(toy_archive), manifest_path=manifest) == 1
    err = capsys.readouterr().err
    assert f"toy/toy_train.txt: sha256 {good}, the manifest expects {'0' * 64}" in err
    assert files_under(tmp_path / "e") == []


def test_an_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "toy" / "toy_train.txt"
    target.parent.mkdir()
    target.write_bytes(b"previous\n")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(mulan.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mulan.write_atomically(target, TOY_TRAIN_TEXT)
    assert target.read_bytes() == b"previous\n"
    assert files_under(tmp_path) == ["toy", "toy/toy_train.txt"]


def test_only_numpy_reconstruction_globals_are_allowed():
    unpickler = mulan.NumpyArrayUnpickler(io.BytesIO(b""))
    assert unpickler.find_class("numpy.core.multiarray", "_reconstruct") is unpickler.find_class(
        "numpy._core.multiarray", "_reconstruct"
    )
    for module, name in [("builtins", "eval"), ("numpy", "load"), ("_codecs", "encode")]:
        with pytest.raises(pickle.UnpicklingError, match=f"refused global {module}.{name}"):
            unpickler.find_class(module, name)


# ------------------------------------------------------------------------------------ real data


@pytest.mark.realdata
@pytest.mark.skipif(
    not (REAL and (Path(REAL) / "enron" / "enron_train.txt").is_file()),
    reason="no enron files in $SLIDEBENCH_DATA (make them: python tools/mulan_sets.py DATA_DIR enron)",
)
def test_converted_enron_loads_through_the_manifest():
    train, test = load(DatasetSpec(name="enron"), REAL)  # size, sha256 and shape checked against the manifest
    assert (train.num_points, test.num_points, train.num_features, train.num_labels) == (1123, 579, 1001, 53)
    assert (train.stats().points_without_features, test.stats().points_without_features) == (6, 2)
    assert np.all(train.features.values == 1.0)
