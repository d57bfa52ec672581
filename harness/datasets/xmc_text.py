"""Parser and writer of the Extreme Classification Repository text format (and its headerless
multi-label LIBSVM variant).

Format, one point per line after an optional header ``N D L``::

    l1,l2,...,lk f1:v1 f2:v2 ...

A point without labels begins with a space (`` f1:v1 ...``); a line that begins directly with a
``f:v`` token is also read as an unlabeled point, since it is unambiguous.

Design: the whole file is parsed with vectorised numpy over chunks of a few MB (byte classes via a
lookup table, number boundaries from class changes, kinds from the separator before and after each
number) and the numbers are converted by pandas' C tokenizer, which is several times faster than
`np.fromstring`. The fast path only *accepts*; whenever one of its checks fails, the chunk is
re-read line by line by the exact, slow `_parse_line`, which is the single source of every error
message (file and line). So the messages are precise and the common case stays fast.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.store.results import open_atomic

log = logging.getLogger(__name__)

INT32_MAX = np.iinfo(np.int32).max
CHUNK_BYTES = 8 << 20  # small enough that every per-chunk temporary stays in the tens of MB

# Byte classes of the fast path.
_DIGIT, _NUMOTHER, _SPACE, _COMMA, _COLON, _NEWLINE, _GARBAGE = range(7)
_LUT = np.full(256, _GARBAGE, dtype=np.uint8)
_LUT[np.frombuffer(b"0123456789", dtype=np.uint8)] = _DIGIT
_LUT[np.frombuffer(b".eE+-", dtype=np.uint8)] = _NUMOTHER
_LUT[np.frombuffer(b" \t\r", dtype=np.uint8)] = _SPACE  # \r: tolerate CRLF files
_LUT[ord(",")] = _COMMA
_LUT[ord(":")] = _COLON
_LUT[ord("\n")] = _NEWLINE


class DataError(ValueError):
    """A data file (or cache entry, or manifest) is not what it must be; the message says where."""


# A malformed file can hold a "token" of megabytes (a missing newline, a binary file): messages
# quote only its beginning and say how long it is, so that an error stays one readable line.
QUOTE_CHARS = 40


def quote(token: str | bytes) -> str:
    """`repr` of a token for an error message, cut to its first QUOTE_CHARS characters."""
    if isinstance(token, bytes):
        token = token.decode("ascii", errors="replace")
    if len(token) <= QUOTE_CHARS:
        return repr(token)
    return f"{token[:QUOTE_CHARS]!r}... ({len(token):,} characters)"


def _clip(text: str) -> str:
    """Like `quote`, unquoted (for numbers)."""
    return text if len(text) <= QUOTE_CHARS else f"{text[:QUOTE_CHARS]}... ({len(text):,} characters)"


# ASCII control characters other than tab, newline and carriage return (CRLF files are accepted).
# Python's str.split() would read form feed, vertical tab and the 0x1c-0x1f separators as spaces;
# the fast path does not, and a file must not mean different things to the two paths.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_NAMES = {0x00: "NUL", 0x0B: "vertical tab", 0x0C: "form feed", 0x1B: "escape", 0x7F: "DEL"}


def _control_message(raw: bytes) -> str | None:
    """What is wrong when a line holds a control character (with its 1-based column), else None."""
    found = _CONTROL.search(raw)
    if found is None:
        return None
    byte = raw[found.start()]
    name = f" ({_CONTROL_NAMES[byte]})" if byte in _CONTROL_NAMES else ""
    return (
        f"control character 0x{byte:02x}{name} at column {found.start() + 1} "
        "(only spaces and tabs may separate tokens)"
    )


@dataclass(frozen=True)
class ParsedXmc:
    """Raw CSR arrays of one parsed file; `harness.datasets.data` wraps them into `Csr`/`Dataset`."""

    f_indptr: np.ndarray
    f_indices: np.ndarray
    f_values: np.ndarray
    l_indptr: np.ndarray
    l_indices: np.ndarray
    num_features: int
    num_labels: int
    has_header: bool


@dataclass
class _Rows:
    """Rows of one chunk: per-line counts plus the flat ids/values."""

    f_counts: np.ndarray
    f_ids: np.ndarray
    f_vals: np.ndarray
    l_counts: np.ndarray
    l_ids: np.ndarray


# --------------------------------------------------------------------------------------------------
# The exact, slow line parser: defines what is valid and words every error message.

_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _check_id(text: str, what: str, limit: int | None, token: str) -> int:
    if text.startswith("-") and _INT.fullmatch(text[1:]):
        raise ValueError(f"negative {what} id {_clip(text)} in {quote(token)}")
    if not _INT.fullmatch(text):
        raise ValueError(f"garbage token {quote(token)} ({what} id {quote(text)} is not a non-negative integer)")
    bound = INT32_MAX if limit is None else limit
    where = f"[0, {limit})" if limit is not None else "int32 range"
    digits = text.lstrip("0")
    # Python refuses to convert more than 4300 digits, and no valid id has more than int32's 10.
    if len(digits) > 10:
        raise ValueError(f"{what} id {_clip(digits)} out of range {where}")
    value = int(text)
    if value >= bound:
        raise ValueError(f"{what} id {value} out of range {where}")
    return value


def _parse_line(
    line: str, num_features: int | None, num_labels: int | None
) -> tuple[list[int], list[int], list[float]]:
    """(labels, feature ids, values) of one line, sorted by id; ValueError says what is wrong."""
    if not line.strip():
        raise ValueError("blank line (a point needs labels or features)")
    tokens = line.split()
    labels: list[int] = []
    first_is_labels = not line[0].isspace() and ":" not in tokens[0]
    if first_is_labels:
        for part in tokens[0].split(","):
            labels.append(_check_id(part, "label", num_labels, tokens[0]))
        tokens = tokens[1:]
    fids: list[int] = []
    vals: list[float] = []
    for token in tokens:
        fid_text, colon, val_text = token.partition(":")
        if not colon:
            if first_is_labels or line[0].isspace():
                raise ValueError(f"garbage token {quote(token)} (expected feature:value)")
            raise ValueError(f"garbage token {quote(token)}")
        fid = _check_id(fid_text, "feature", num_features, token)
        if not _FLOAT.fullmatch(val_text):
            raise ValueError(f"garbage token {quote(token)} (value {quote(val_text)} is not a number)")
        value = float(val_text)
        if not np.isfinite(np.float32(value)):
            raise ValueError(f"non-finite value {quote(val_text)} for feature {fid}")
        fids.append(fid)
        vals.append(value)
    for what, ids in (("label", labels), ("feature", fids)):
        if len(set(ids)) != len(ids):
            dup = min(i for i in set(ids) if ids.count(i) > 1)
            raise ValueError(f"duplicate {what} id {dup}")
    order = sorted(range(len(fids)), key=fids.__getitem__)
    return sorted(labels), [fids[i] for i in order], [vals[i] for i in order]


# --------------------------------------------------------------------------------------------------
# Header


HEADER_TOO_LARGE = 10**18  # stands in for a header number of more digits than any real count has


def parse_header(first_line: bytes) -> tuple[int, int, int] | None:
    """(points, features, labels) when `first_line` is a header, None when it looks like data."""
    tokens = first_line.split()
    if len(tokens) == 3 and all(t.isdigit() for t in tokens):
        # Python refuses to convert more than 4300 digits; any number this long is out of range anyway.
        a, b, c = (int(t) if len(t.lstrip(b"0")) <= 18 else HEADER_TOO_LARGE for t in tokens)
        return a, b, c
    return None


def _header_error(path: Path, first_line: bytes, why: str) -> DataError:
    text = first_line.decode("ascii", errors="replace").rstrip("\r\n")
    return DataError(f"{path}:1: bad header {quote(text)}: {why} (expected 'points features labels')")


def check_header(path: Path, first_line: bytes) -> tuple[int, int, int]:
    """(points, features, labels) of a line that must be a valid ``N D L`` header; DataError naming
    the file and line 1 otherwise."""
    control = _control_message(first_line)
    if control is not None:
        raise DataError(f"{path}:1: {control}")
    found = parse_header(first_line)
    if found is None:
        tokens = first_line.split()
        why = f"{len(tokens)} fields" if len(tokens) != 3 else "fields must be non-negative integers"
        raise _header_error(path, first_line, why)
    n_points, d, l = found
    if n_points <= 0 or d <= 0 or l <= 0:
        raise _header_error(path, first_line, "points, features and labels must be positive")
    if n_points >= HEADER_TOO_LARGE:
        raise _header_error(path, first_line, "more points than any file can hold")
    if d > INT32_MAX or l > INT32_MAX:
        raise _header_error(path, first_line, "features and labels must fit int32 ids")
    return n_points, d, l


def read_header(path: Path) -> tuple[int, int, int]:
    """(points, features, labels) from a file's ``N D L`` header, reading only its first line."""
    with open(path, "rb") as fh:
        # A header is a few dozen bytes; a first line longer than this is not one (and is quoted cut).
        first_line = fh.readline(4096).rstrip(b"\r\n")
    if not first_line.strip():
        raise DataError(f"{path}:1: no header (expected 'points features labels' on the first line)")
    return check_header(path, first_line)


# --------------------------------------------------------------------------------------------------
# Fast chunk parser


def _parse_numbers(masked: np.ndarray, expected: int) -> np.ndarray | None:
    """All numbers of a chunk whose non-number bytes were turned into newlines, or None on failure."""
    import pandas as pd  # heavy import, only when a file is actually parsed

    if expected == 0:
        return np.zeros(0, dtype=np.float64)
    try:
        frame = pd.read_csv(
            io.BytesIO(masked.tobytes()),
            header=None,
            names=["x"],
            dtype=np.float64,
            engine="c",
            na_filter=False,
            skip_blank_lines=True,
        )
    except (ValueError, TypeError):
        return None
    numbers = frame["x"].to_numpy()
    return numbers if len(numbers) == expected else None


def _counts_per_line(positions: np.ndarray, newlines: np.ndarray) -> np.ndarray:
    """How many of the sorted `positions` fall on each line (lines end at `newlines`)."""
    before = np.searchsorted(positions, newlines)
    return np.diff(before, prepend=0).astype(np.int64)


def _sort_rows(counts: np.ndarray, ids: np.ndarray, vals: np.ndarray | None):
    """Sort ids within each row (the README promises sorted ids; we accept unsorted ones).

    Returns (ids, vals) or None when a row holds a duplicate id.
    """
    if len(ids) < 2:
        return ids, vals
    rows = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    same_row = rows[1:] == rows[:-1]
    step = np.diff(ids)
    if np.any(same_row & (step < 0)):
        order = np.lexsort((ids, rows))
        ids = ids[order]
        vals = None if vals is None else vals[order]
        step = np.diff(ids)
    if np.any(same_row & (step == 0)):
        return None
    return ids, vals


def _fast_chunk(chunk: np.ndarray, num_features: int | None, num_labels: int | None) -> _Rows | None:
    """Parse a chunk of whole lines (ending in newline); None when anything is off."""
    cls = _LUT[chunk]
    if np.any(cls == _GARBAGE):
        return None
    isnum = cls <= _NUMOTHER
    newlines = np.flatnonzero(cls == _NEWLINE)
    prev_isnum = np.empty_like(isnum)
    prev_isnum[0] = False
    prev_isnum[1:] = isnum[:-1]
    starts = np.flatnonzero(isnum & ~prev_isnum)
    next_isnum = np.empty_like(isnum)
    next_isnum[-1] = False
    next_isnum[:-1] = isnum[1:]
    ends = np.flatnonzero(isnum & ~next_isnum)
    if len(starts) == 0:
        return None  # only blank lines
    # The byte before a chunk is a line start, i.e. a newline.
    prev_sep = cls[np.maximum(starts - 1, 0)]
    if starts[0] == 0:
        prev_sep[0] = _NEWLINE
    next_sep = cls[ends + 1]  # the chunk ends in a newline, so ends + 1 is always inside
    line_end = (next_sep == _SPACE) | (next_sep == _NEWLINE)
    is_fid = ((prev_sep == _SPACE) | (prev_sep == _NEWLINE)) & (next_sep == _COLON)
    is_val = (prev_sep == _COLON) & line_end
    is_lab = ((prev_sep == _COMMA) | (prev_sep == _NEWLINE)) & (line_end | (next_sep == _COMMA))
    if not np.all(is_fid | is_val | is_lab):
        return None
    # Colons and commas must sit between two numbers ("1, 2:1" or " :5" are malformed).
    for sep in (_COLON, _COMMA):
        at = np.flatnonzero(cls == sep)
        if len(at) and (at[0] == 0 or not (np.all(cls[at - 1] <= _NUMOTHER) and np.all(cls[at + 1] <= _NUMOTHER))):
            return None
    # Ids are plain digits: no sign, dot or exponent inside a label or feature id.
    # Which number owns each sign/dot/exponent byte (a sorted search: cheaper than a cumsum over
    # the whole chunk, since such bytes are at most one per value).
    other = np.flatnonzero(cls == _NUMOTHER)
    if len(other):
        owner = np.searchsorted(starts, other, side="right") - 1
        if not np.all(is_val[owner]):
            return None
    n_lines = len(newlines)
    if np.any(_counts_per_line(starts, newlines) == 0):
        return None  # a blank line
    masked = np.where(isnum, chunk, np.uint8(ord("\n")))
    numbers = _parse_numbers(masked, len(starts))
    if numbers is None:
        return None
    feature_limit = INT32_MAX if num_features is None else num_features
    label_limit = INT32_MAX if num_labels is None else num_labels
    fids_f = numbers[is_fid]
    labs_f = numbers[is_lab]
    if np.any(fids_f >= feature_limit) or np.any(labs_f >= label_limit):
        return None
    vals = numbers[is_val].astype(np.float32)
    if not np.all(np.isfinite(vals)):
        return None
    f_counts = _counts_per_line(starts[is_fid], newlines)
    l_counts = _counts_per_line(starts[is_lab], newlines)
    assert len(f_counts) == n_lines
    sorted_f = _sort_rows(f_counts, fids_f.astype(np.int32), vals)
    sorted_l = _sort_rows(l_counts, labs_f.astype(np.int32), None)
    if sorted_f is None or sorted_l is None:
        return None
    return _Rows(f_counts, sorted_f[0], sorted_f[1], l_counts, sorted_l[0])


def _slow_chunk(
    chunk: bytes, path: Path, first_line_no: int, num_features: int | None, num_labels: int | None
) -> _Rows:
    """Line-by-line parse of a chunk; raises DataError at the first bad line."""
    f_counts, l_counts, f_ids, f_vals, l_ids = [], [], [], [], []
    lines = chunk.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for offset, raw in enumerate(lines):
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}:{first_line_no + offset}: garbage byte 0x{raw[exc.start]:02x} (not ASCII) "
                f"at column {exc.start + 1}"
            ) from None
        control = _control_message(raw)
        if control is not None:
            raise DataError(f"{path}:{first_line_no + offset}: {control}")
        try:
            labels, fids, vals = _parse_line(text, num_features, num_labels)
        except ValueError as exc:
            raise DataError(f"{path}:{first_line_no + offset}: {exc}") from None
        l_counts.append(len(labels))
        f_counts.append(len(fids))
        l_ids.extend(labels)
        f_ids.extend(fids)
        f_vals.extend(vals)
    return _Rows(
        np.asarray(f_counts, dtype=np.int64),
        np.asarray(f_ids, dtype=np.int32),
        np.asarray(f_vals, dtype=np.float32),
        np.asarray(l_counts, dtype=np.int64),
        np.asarray(l_ids, dtype=np.int32),
    )


def _chunk_bounds(data: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """[a, b) byte ranges of whole lines, each about CHUNK_BYTES long."""
    bounds = []
    pos = start
    while pos < end:
        stop = min(pos + CHUNK_BYTES, end)
        if stop < end:
            nl = data.rfind(b"\n", pos, stop)
            # A line longer than a chunk: extend to its end.
            stop = nl + 1 if nl >= pos else (data.find(b"\n", stop, end) + 1 or end)
        bounds.append((pos, stop))
        pos = stop
    return bounds


def parse_xmc(
    data: bytes,
    path: Path,
    *,
    header: bool | None = None,
    num_features: int | None = None,
    num_labels: int | None = None,
    progress: Callable[[int, int | None, float], None] | None = None,
) -> ParsedXmc:
    """Parse the bytes of an XMC / multi-label LIBSVM file; `path` is only used in messages.

    `header`: True requires the ``N D L`` header, False forbids it, None detects it. Without a
    header, `num_features`/`num_labels` bound the ids when given and are inferred (max id + 1)
    otherwise; with one, they must agree with it when given. `progress(points_done, points_total
    or None, fraction of the bytes done)` is called after each chunk.
    """
    if re.search(rb"\S", data) is None:  # (data.strip() would copy a file of hundreds of MB)
        raise DataError(f"{path}: empty file")
    first_nl = data.find(b"\n")
    first_line = data if first_nl < 0 else data[:first_nl]
    # The header is split by bytes.split(), which also splits at form feed and vertical tab.
    control = _control_message(first_line)
    if control is not None:
        raise DataError(f"{path}:1: {control}")
    found = parse_header(first_line)
    tokens = first_line.split()
    if header is None:
        # A first line without any "f:v" token and with several fields cannot be a data line, so it
        # is meant as a header (and is reported as a bad one when it is not `N D L`).
        has_header = found is not None or (b":" not in first_line and len(tokens) >= 2)
    else:
        has_header = header
    if has_header:
        n_points, d, l = check_header(path, first_line)
        for given, declared, what in ((num_features, d, "features"), (num_labels, l, "labels")):
            if given is not None and given != declared:
                raise DataError(f"{path}:1: header declares {declared} {what}, expected {given}")
        num_features, num_labels = d, l
        body_start = len(data) if first_nl < 0 else first_nl + 1
    else:
        if header is False and found is not None:
            raise DataError(f"{path}:1: looks like a header ({quote(first_line)}) but header=False")
        n_points = None
        body_start = 0
    # Trailing whitespace/newlines at EOF are not points.
    body_end = len(data)
    while body_end > body_start and data[body_end - 1] in b" \t\r\n":
        body_end -= 1
    parts: list[_Rows] = []
    line_no = 2 if has_header else 1
    for a, b in _chunk_bounds(data, body_start, body_end):
        raw = data[a:b] if b > a and data[b - 1] == 10 else data[a:b] + b"\n"
        lines_here = raw.count(b"\n")
        if n_points is not None and line_no - 2 + lines_here > n_points:
            extra = n_points + 2
            raise DataError(
                f"{path}:{extra}: header declares {n_points} points but the file has more lines"
            )
        rows = _fast_chunk(np.frombuffer(raw, dtype=np.uint8), num_features, num_labels)
        if rows is None:
            rows = _slow_chunk(raw, path, line_no, num_features, num_labels)
            # The fast path refused something the exact parser accepts (e.g. an unusual float
            # spelling): fine, the slow result is exact.
            log.debug("%s: lines %d-%d read by the exact parser", path, line_no, line_no + lines_here - 1)
        parts.append(rows)
        line_no += lines_here
        if progress is not None:
            done = (b - body_start) / max(body_end - body_start, 1)
            progress(line_no - (2 if has_header else 1), n_points, done)
    n_read = line_no - (2 if has_header else 1)
    if n_points is not None and n_read != n_points:
        raise DataError(f"{path}:{line_no - 1}: header declares {n_points} points but the file has {n_read}")
    if n_read == 0:
        raise DataError(f"{path}: no points (header only)")

    def cat(name: str, dtype) -> np.ndarray:
        arrays = [getattr(p, name) for p in parts]
        return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)

    f_ids, f_vals, l_ids = cat("f_ids", np.int32), cat("f_vals", np.float32), cat("l_ids", np.int32)
    f_indptr = np.zeros(n_read + 1, dtype=np.int64)
    np.cumsum(cat("f_counts", np.int64), out=f_indptr[1:])
    l_indptr = np.zeros(n_read + 1, dtype=np.int64)
    np.cumsum(cat("l_counts", np.int64), out=l_indptr[1:])
    if num_features is None:
        num_features = int(f_ids.max()) + 1 if len(f_ids) else 1
    if num_labels is None:
        num_labels = int(l_ids.max()) + 1 if len(l_ids) else 1
    return ParsedXmc(f_indptr, f_ids, f_vals, l_indptr, l_ids, num_features, num_labels, has_header)


# --------------------------------------------------------------------------------------------------
# Writer (vectorised: the benchmark and `data synth --out` write files of hundreds of MB)

VALUE_DECIMALS = 6


def _digit_count(x: np.ndarray) -> np.ndarray:
    """Decimal digits of non-negative integers (0 has one digit)."""
    n = np.ones(len(x), dtype=np.int64)
    bound = 10
    for _ in range(18):
        more = x >= bound
        if not more.any():
            break
        n += more
        bound *= 10
    return n


def _put_ints(out: np.ndarray, pos: np.ndarray, x: np.ndarray, width: np.ndarray) -> None:
    """Write integers `x` as ASCII at byte offsets `pos` (each `width` digits)."""
    x = x.astype(np.int64, copy=True)
    for d in range(int(width.max()) if len(width) else 0):
        live = width > d
        out[pos[live] + width[live] - 1 - d] = (x[live] % 10 + 48).astype(np.uint8)
        x //= 10


def _format_rows(
    l_indptr: np.ndarray,
    l_ids: np.ndarray,
    f_indptr: np.ndarray,
    f_ids: np.ndarray,
    f_vals: np.ndarray,
) -> bytes:
    """XMC text of the given rows (no header). Values use at most 6 decimals, trailing zeros
    dropped ("1", "0.25"); they must be finite and non-negative (tf-idf, counts, binary)."""
    n = len(l_indptr) - 1
    if len(f_vals) and (not np.all(np.isfinite(f_vals)) or f_vals.min() < 0 or f_vals.max() >= 1e12):
        # Fixed-point formatting in int64: 1e12 * 1e6 stays below 2**63.
        raise ValueError("the writer takes finite values in [0, 1e12) only")
    scaled = np.rint(f_vals.astype(np.float64) * 10**VALUE_DECIMALS).astype(np.int64)
    int_part = scaled // 10**VALUE_DECIMALS
    frac = scaled % 10**VALUE_DECIMALS
    # Trailing zeros of the fraction are dropped: frac_digits in 0..6.
    frac_digits = np.full(len(frac), VALUE_DECIMALS, dtype=np.int64)
    frac_digits[frac == 0] = 0
    trimmed = frac.copy()
    for _ in range(VALUE_DECIMALS - 1):
        tz = (trimmed % 10 == 0) & (frac_digits > 0)
        if not tz.any():
            break
        trimmed[tz] //= 10
        frac_digits[tz] -= 1
    l_w = _digit_count(l_ids)
    f_w = _digit_count(f_ids)
    i_w = _digit_count(int_part)
    # Per token: " fid:int[.frac]"; per label: "lab," (the last comma per row becomes nothing).
    f_len = 1 + f_w + 1 + i_w + np.where(frac_digits > 0, 1 + frac_digits, 0)
    l_len = l_w + 1
    l_counts = np.diff(l_indptr)
    f_counts = np.diff(f_indptr)
    l_cs = np.concatenate(([0], np.cumsum(l_len)))
    f_cs = np.concatenate(([0], np.cumsum(f_len)))
    row_l_bytes = l_cs[l_indptr[1:]] - l_cs[l_indptr[:-1]]
    row_l_bytes = np.where(l_counts > 0, row_l_bytes - 1, 0)  # no comma after the last label
    row_f_bytes = f_cs[f_indptr[1:]] - f_cs[f_indptr[:-1]]
    # An unlabeled row begins with a space already (each feature token starts with one); a row with
    # labels but no features needs nothing extra.
    row_len = row_l_bytes + row_f_bytes + 1
    row_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_len, out=row_start[1:])
    out = np.full(int(row_start[-1]), ord(" "), dtype=np.uint8)
    out[row_start[1:] - 1] = ord("\n")
    if len(l_ids):
        rows = np.repeat(np.arange(n), l_counts)
        # Offset within the row: exclusive cumsum of token lengths minus the row's first one.
        within = l_cs[:-1] - np.repeat(l_cs[l_indptr[:-1]], l_counts)
        lpos = row_start[:-1][rows] + within
        _put_ints(out, lpos, l_ids, l_w)
        last = np.zeros(len(l_ids), dtype=bool)
        last[l_indptr[1:][l_counts > 0] - 1] = True
        out[(lpos + l_w)[~last]] = ord(",")
    if len(f_ids):
        rows = np.repeat(np.arange(n), f_counts)
        within = f_cs[:-1] - np.repeat(f_cs[f_indptr[:-1]], f_counts)
        fpos = row_start[:-1][rows] + row_l_bytes[rows] + within + 1  # after the token's space
        _put_ints(out, fpos, f_ids, f_w)
        colon = fpos + f_w
        out[colon] = ord(":")
        _put_ints(out, colon + 1, int_part, i_w)
        has_frac = frac_digits > 0
        dot = colon + 1 + i_w
        out[dot[has_frac]] = ord(".")
        # Fraction digits, left-aligned: digit k (0-based) of the 6-digit fraction at dot + 1 + k.
        for k in range(VALUE_DECIMALS):
            live = frac_digits > k
            if not live.any():
                break
            digit = (frac[live] // 10 ** (VALUE_DECIMALS - 1 - k)) % 10
            out[dot[live] + 1 + k] = (digit + 48).astype(np.uint8)
    return out.tobytes()


def write_xmc(
    path: Path,
    l_indptr: np.ndarray,
    l_ids: np.ndarray,
    f_indptr: np.ndarray,
    f_ids: np.ndarray,
    f_vals: np.ndarray,
    num_features: int,
    num_labels: int,
    *,
    header: bool = True,
    rows_per_block: int = 50_000,
) -> None:
    """Write rows in the XMC text format (with the ``N D L`` header unless header=False).

    Atomic (`open_atomic`): `path` is either the old file or the complete new one, never a prefix
    that would parse as a shorter, valid-looking data set up to its header check.
    """
    n = len(l_indptr) - 1
    path = Path(path)
    with open_atomic(path) as fh:
        if header:
            fh.write(f"{n} {num_features} {num_labels}\n".encode())
        for a in range(0, n, rows_per_block):
            b = min(n, a + rows_per_block)
            la, lb, fa, fb = l_indptr[a], l_indptr[b], f_indptr[a], f_indptr[b]
            fh.write(
                _format_rows(
                    l_indptr[a : b + 1] - la,
                    l_ids[la:lb],
                    f_indptr[a : b + 1] - fa,
                    f_ids[fa:fb],
                    f_vals[fa:fb],
                )
            )
