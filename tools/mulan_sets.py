#!/usr/bin/env python3
"""Build a slidebench data directory of Mulan multi-label benchmark sets from one pinned PyPI file.

What it does
    Reads the Mulan sets that the source distribution scikit-multilearn==0.0.1 redistributes
    (members ``scikit-multilearn-0.0.1/skmultilearn/data/NAME-{train,test}.dump.bz2``) and writes
    each as ``DATA_DIR/NAME/NAME_train.txt`` and ``NAME_test.txt`` in the Extreme Classification
    Repository text format that `harness.datasets.data.load` reads:

        points features labels                 <- header
        l1,l2,... f1:v1 f2:v2 ...              <- one line per point, 0-based sorted ids

    A point without labels is a line that starts with a space; a point without features is its
    labels alone. A split whose values are all integral (the bag-of-words sets: 0/1) is written
    with integers; otherwise each value is repr(float) (scene, yeast, emotions, mediamill: dense
    real values). Values of 0 are left out, as in any sparse line.
    Mulan's own train/test split is kept.

Where the data come from
    Mulan (Tsoumakas, Spyromitros-Xioufis, Vilcek and Vlahavas, "Mulan: A Java Library for
    Multi-Label Learning", JMLR 12, 2011) collected these sets; scikit-multilearn 0.0.1 shipped
    them as pickles. Cite each set's data paper:
        enron      Klimt and Yang, "The Enron Corpus: A New Dataset for Email Classification
                   Research", ECML 2004
        medical    Pestian et al., "A Shared Task Involving Multi-label Classification of
                   Clinical Free Text", BioNLP 2007
        tmc2007    Srivastava and Zane-Ulman, "Discovering Recurring Anomalies in Text Reports
                   Regarding Complex Space Systems", IEEE Aerospace Conference 2005
        corel5k    Duygulu, Barnard, de Freitas and Forsyth, "Object Recognition as Machine
                   Translation: Learning a Lexicon for a Fixed Image Vocabulary", ECCV 2002
        bibtex     Katakis, Tsoumakas and Vlahavas 2008;  delicious  Tsoumakas et al. 2008
        scene      Boutell, Luo, Shen and Brown, "Learning Multi-label Scene Classification",
                   Pattern Recognition 37(9), 2004
        yeast      Elisseeff and Weston, "A Kernel Method for Multi-Labelled Classification",
                   NIPS 2001
        emotions   Trohidis, Tsoumakas, Kalliris and Vlahavas, "Multi-label Classification of
                   Music into Emotions", ISMIR 2008
        mediamill  Snoek, Worring, van Gemert, Geusebroek and Smeulders, "The Challenge Problem
                   for Automated Detection of 101 Semantic Concepts in Multimedia", ACM
                   Multimedia 2006
    The sdist's setup.py does not work under Python 3, so pip cannot install it; that does not
    matter here: nothing from the archive is run or extracted, its members are only read.

Why the pickles are read the careful way
    Each member is a bz2-compressed Python 2 pickle of {'X': points x features array, 'y':
    points x labels 0/1 array}. Unpickling runs whatever callables a pickle names, so a plain
    pickle.load of a downloaded file would run arbitrary code. Two guards: the archive's size and
    sha256 must equal the pinned values before it is opened, and the unpickler resolves only
    numpy's array-reconstruction globals (numpy.core.multiarray._reconstruct or its numpy 2 name
    numpy._core.multiarray._reconstruct, numpy.ndarray, numpy.dtype); any other global is refused
    by name before anything could call it.

Nothing half-done
    Every requested set is read, checked and formatted in memory first; each file's bytes and
    sha256 are compared with datasets/manifest.toml (when it lists that set) before anything is
    written. Each file then goes to a temporary name in its directory and is renamed into place
    only when complete, so an interrupted run never leaves a truncated data file.

Usage
    python tools/mulan_sets.py DATA_DIR [--archive PATH] [NAME ...]

    NAMEs are lowercase manifest names (default: enron medical tmc2007-500 corel5k bibtex
    delicious); the archive also holds scene, yeast, emotions and mediamill, which convert when
    named, and genbase, which is not converted: its features are nominal attributes (an object
    array), refused as not numeric. Without --archive the sdist is downloaded from PyPI to a
    temporary file. Exit status 1 on any error (2 for a malformed command line).
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import io
import os
import pickle
import sys
import tarfile
import tempfile
import tomllib
import urllib.request
from pathlib import Path

import numpy as np

SDIST_URL = (
    "https://files.pythonhosted.org/packages/0e/5a/"
    "4bc646ce33f2b6a6130e09efb5e2530d9661a5c4c51e4e17821b459016b2/scikit-multilearn-0.0.1.tar.gz"
)
SDIST_BYTES = 32_522_368
SDIST_SHA256 = "ac30a342595481f46db77f5334c3a1e2d8261f4adbd104e3444f801c3c89b6a0"
MEMBER_DIR = "scikit-multilearn-0.0.1/skmultilearn/data/"
SPLITS = ("train", "test")
DEFAULT_NAMES = ("enron", "medical", "tmc2007-500", "corel5k", "bibtex", "delicious")
# The repository this script lives in: its manifest holds the expected bytes and sha256.
MANIFEST_PATH = Path(__file__).resolve().parent.parent / "datasets" / "manifest.toml"


class ConversionError(Exception):
    """Anything that stops the conversion; main() prints it and exits with status 1."""


# --------------------------------------------------------------------------------------------------
# The archive: fetched or given, verified before use


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(path: Path, expected_bytes: int, expected_sha256: str) -> bytes:
    """The archive's bytes, only if size and sha256 are the pinned ones.

    The whole file (32 MB) is held in memory, so what was verified is exactly what gets read:
    nothing can change it between the check and the use.
    """
    data = Path(path).read_bytes()
    got_sha256 = sha256_of(data)
    if len(data) != expected_bytes or got_sha256 != expected_sha256:
        raise ConversionError(
            f"{path}: not the pinned scikit-multilearn 0.0.1 sdist: expected {expected_bytes} bytes "
            f"with sha256 {expected_sha256}, got {len(data)} bytes with sha256 {got_sha256}"
        )
    return data


def download(url: str, dest: Path, max_bytes: int) -> None:
    """Stream `url` to `dest`, giving up once more than `max_bytes` arrive (the size is pinned, so
    a longer answer is wrong anyway and need not fill the disk)."""
    received = 0
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        while block := response.read(1 << 20):
            received += len(block)
            if received > max_bytes:
                raise ConversionError(f"{url}: more than the expected {max_bytes} bytes; download refused")
            out.write(block)


# --------------------------------------------------------------------------------------------------
# Reading members safely


try:
    from numpy._core.multiarray import _reconstruct  # numpy >= 2
except ImportError:
    from numpy.core.multiarray import _reconstruct  # numpy 1.x

# (module, name) as a pickle spells it -> the object it gets. Python 2 era pickles say
# numpy.core.multiarray; numpy 2 renamed the module, so both spellings map to the same function.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and nothing else that needs a global.

    find_class is where every global a pickle names is looked up (GLOBAL, STACK_GLOBAL, INST,
    OBJ and extension codes alike); answering from a fixed table, without importing anything,
    means a refused name is never even loaded, let alone called.
    """

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name} (only numpy array reconstruction is allowed)"
            ) from None


def read_member(tar: tarfile.TarFile, member_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of one .dump.bz2 member, unpickled safely and validated."""
    try:
        member = tar.getmember(member_name)
    except KeyError:
        raise ConversionError(f"archive has no member {member_name}") from None
    if not member.isfile():  # a link could point anywhere in the archive: only plain files
        raise ConversionError(f"{member_name}: not a regular file in the archive")
    try:
        with tar.extractfile(member) as raw, bz2.open(raw, "rb") as pickled:
            # latin1: Python 2 wrote array bytes as str; numpy expects them decoded this way.
            data = NumpyArrayUnpickler(pickled, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as exc:
        raise ConversionError(f"{member_name}: {exc}") from None
    return validated(data, member_name)


def validated(data: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """X and y of an unpickled member, refused unless they are what the writer can represent."""
    if not isinstance(data, dict) or "X" not in data or "y" not in data:
        raise ConversionError(f"{where}: expected a dict with keys 'X' and 'y', got {type(data).__name__}")
    X, y = data["X"], data["y"]
    for key, array in (("X", X), ("y", y)):
        if not isinstance(array, np.ndarray) or array.ndim != 2 or array.dtype.kind not in "biuf":
            shape = getattr(array, "shape", None)
            raise ConversionError(
                f"{where}: {key} must be a 2-D numeric array, got {type(array).__name__} {shape}"
            )
    if X.shape[0] != y.shape[0]:
        raise ConversionError(f"{where}: X has {X.shape[0]} rows but y has {y.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ConversionError(f"{where}: y holds values other than 0 and 1")
    if not np.isfinite(X).all():
        raise ConversionError(f"{where}: X holds NaN or infinite values")
    return X, y


# --------------------------------------------------------------------------------------------------
# Writing the XMC text format


def format_xmc(X: np.ndarray, y: np.ndarray) -> bytes:
    """One split as XMC text (byte-identical to the slidebench shared bibtex/delicious files)."""
    # Integral values as "1" rather than "1.0", which is what the shared files hold; anything
    # else as repr(float), which reads back to the same double.
    integral = X.dtype.kind in "biu" or bool(np.all(X == np.trunc(X)))

    def value(v) -> str:
        return str(int(v)) if integral else repr(float(v))

    lines = [f"{X.shape[0]} {X.shape[1]} {y.shape[1]}"]
    for features_row, labels_row in zip(X, y):
        labels = ",".join(str(j) for j in np.flatnonzero(labels_row))
        features = " ".join(f"{j}:{value(features_row[j])}" for j in np.flatnonzero(features_row))
        if features:
            lines.append(f"{labels} {features}")  # no labels: the line starts with a space
        elif labels:
            lines.append(labels)
        else:
            lines.append(" ")  # neither: still a line, still starting with a space
    return ("\n".join(lines) + "\n").encode("ascii")


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name beside `path`, then rename: readers see the old file or the
    whole new one. Mode "x" creates it with the usual permissions (umask), unlike mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temporary file behind
        temporary.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------
# The whole conversion


def sets_in(tar: tarfile.TarFile) -> dict[str, str]:
    """Lowercase name -> the archive's spelling (corel5k -> Corel5k) for sets with both splits."""
    names = set(tar.getnames())
    stems = [
        n[len(MEMBER_DIR) : -len("-train.dump.bz2")]
        for n in names
        if n.startswith(MEMBER_DIR) and n.endswith("-train.dump.bz2")
    ]
    # A stem with a "/" would become a path below DATA_DIR other than NAME/: not a set.
    return {s.lower(): s for s in stems if "/" not in s and f"{MEMBER_DIR}{s}-test.dump.bz2" in names}


def convert(archive: bytes, names: list[str]) -> dict[str, bytes]:
    """Relative path ("enron/enron_train.txt") -> file contents, for every split of `names`."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        available = sets_in(tar)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ConversionError(
                f"not in the archive: {', '.join(unknown)}; it has: {', '.join(sorted(available))}"
            )
        for name in names:
            print(f"mulan_sets: converting {name}", file=sys.stderr)  # tmc2007-500, delicious: seconds each
            splits = {s: read_member(tar, f"{MEMBER_DIR}{available[name]}-{s}.dump.bz2") for s in SPLITS}
            widths = {s: (X.shape[1], y.shape[1]) for s, (X, y) in splits.items()}
            if widths["train"] != widths["test"]:
                raise ConversionError(
                    f"{name}: (features, labels) differ: train {widths['train']}, test {widths['test']}"
                )
            for split, (X, y) in splits.items():
                files[f"{name}/{name}_{split}.txt"] = format_xmc(X, y)
    return files


def check_against_manifest(files: dict[str, bytes], manifest_path: Path) -> dict[str, str]:
    """Relative path -> "matches the manifest" / "not in the manifest"; ConversionError on any
    difference from what the manifest expects (bytes, sha256 or the file's place)."""
    if not manifest_path.is_file():
        print(f"mulan_sets: no manifest at {manifest_path}; files not checked", file=sys.stderr)
        return {path: "not checked (no manifest)" for path in files}
    with open(manifest_path, "rb") as fh:
        datasets = tomllib.load(fh).get("datasets", {})
    verdicts, problems = {}, []
    for path, data in files.items():
        name, file_name = path.split("/")
        split = file_name[len(name) + 1 : -len(".txt")]
        expected = datasets.get(name, {}).get(split)
        if expected is None:
            verdicts[path] = "not in the manifest"
            continue
        got = {"file": path, "bytes": len(data), "sha256": sha256_of(data)}
        for key, value in got.items():
            if key in expected and expected[key] != value:
                problems.append(f"{path}: {key} {value}, the manifest expects {expected[key]}")
        verdicts[path] = "matches the manifest"
    if problems:
        raise ConversionError(
            "converted files differ from the manifest; nothing written:\n  " + "\n  ".join(problems)
        )
    return verdicts


def main(
    argv: list[str] | None = None,
    *,
    sdist_bytes: int = SDIST_BYTES,
    sdist_sha256: str = SDIST_SHA256,
    manifest_path: Path = MANIFEST_PATH,
) -> int:
    """The command line. The keyword arguments exist for tests (a fake archive, a fake manifest);
    the defaults are the pinned values."""
    parser = argparse.ArgumentParser(
        prog="mulan_sets.py",
        description="Build slidebench data files from the scikit-multilearn 0.0.1 sdist.",
    )
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="where NAME/NAME_{train,test}.txt go")
    parser.add_argument(
        "--archive", type=Path, metavar="PATH", help="a local copy of the sdist (else it is downloaded)"
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: {' '.join(DEFAULT_NAMES)}")
    # Intermixed: the documented order "DATA_DIR --archive PATH NAME ..." puts names after an option.
    args = parser.parse_intermixed_args(argv)
    names = list(dict.fromkeys(args.names or DEFAULT_NAMES))  # in order, each once

    try:
        if args.archive is not None:
            archive = read_verified(args.archive, sdist_bytes, sdist_sha256)
        else:
            with tempfile.TemporaryDirectory(prefix="mulan_sets-") as scratch:
                fetched = Path(scratch) / "scikit-multilearn-0.0.1.tar.gz"
                print(f"mulan_sets: downloading {SDIST_URL}", file=sys.stderr)
                download(SDIST_URL, fetched, sdist_bytes)
                archive = read_verified(fetched, sdist_bytes, sdist_sha256)
        print(f"mulan_sets: archive verified ({sdist_bytes} bytes, sha256 {sdist_sha256})", file=sys.stderr)
        files = convert(archive, names)
        verdicts = check_against_manifest(files, Path(manifest_path))
        for path, data in files.items():
            write_atomically(args.data_dir / path, data)
        for path, data in files.items():
            # Read back: what is reported (and was checked) is what the data directory now holds.
            written = (args.data_dir / path).read_bytes()
            if written != data:
                raise ConversionError(f"{args.data_dir / path}: reads back different from what was written")
            print(
                f"{args.data_dir / path}  {len(written)} bytes  sha256 {sha256_of(written)}  {verdicts[path]}"
            )
    except (ConversionError, OSError) as exc:
        print(f"mulan_sets: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
