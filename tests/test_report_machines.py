"""The report compares speed only between records of one machine type (CPU model + core count).

Runs spread over a cluster may land on different hardware. Uses the fixture records of
test_report (every one from one Xeon host) and moves some of them to another machine type.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.reporting import report
from harness.reporting.plots.markup import Bullets, Para, Table, to_markdown
from harness.reporting.plots.records import Run, load_runs

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records"
XEON = "Intel(R) Xeon(R) Gold 6226R CPU @ 2.90GHz, 16 cores / 32 threads"
EPYC = "AMD EPYC 7763 64-Core Processor, 8 cores"


def _delicious_train() -> list[Run]:
    return [r for r in load_runs(FIXTURES) if r.workload == "delicious" and r.kind == "train"]


def _on_epyc(run: Run) -> Run:
    env = dict(run.environment, cpu_model="AMD EPYC 7763 64-Core Processor", hostname="node-7")
    env["cores"] = {"physical": 8, "logical": 8, "usable": 8}
    return replace(run, environment=env)


def _blocks(runs: list[Run]) -> list:
    return report.build(runs, [], {}, Path("results"), None)


def _speedup_cells(table: Table) -> dict[str, str]:
    """engine -> 'speedup vs tf_dense (time to target)' cell of a time-to-target table."""
    column = next(i for i, h in enumerate(table.headers) if h.startswith("speedup vs"))
    return {row[0]: row[column] for row in table.rows}


def test_one_machine_type_reads_as_before() -> None:
    blocks = _blocks(_delicious_train())
    text = to_markdown(blocks, Path("."))
    assert "machine types" not in text and "On Intel" not in text
    (ttt,) = [
        b for b in blocks if isinstance(b, Table) and any(h.startswith("speedup vs") for h in b.headers)
    ]
    cells = _speedup_cells(ttt)
    assert cells["slide"].endswith("×") and cells["tf_dense"] == "1.00×"


def test_two_machine_types_are_never_compared_with_each_other() -> None:
    # slide on the Xeon, the reference tf_dense (and tf_sampled) on another machine type.
    runs = [r if r.engine == "slide" else _on_epyc(r) for r in _delicious_train()]
    blocks = _blocks(runs)
    paras = [b.text for b in blocks if isinstance(b, Para)]
    assert any("come from 2 machine types" in p and "same machine type" in p for p in paras)
    (where,) = [b for b in blocks if isinstance(b, Bullets) and any(XEON in i for i in b.items)]
    assert where.items == (
        f"{EPYC}: tf_dense seed 0/1/2, tf_sampled seed 0/1/2 (host node-7)",
        f"{XEON}: slide seed 0/1/2 (host bench-01)",
    )
    # Each speed table comes once per machine type, headed by it ...
    assert paras.count(f"On {XEON}:") == 3 and paras.count(f"On {EPYC}:") == 3
    ttt = [b for b in blocks if isinstance(b, Table) and any(h.startswith("speedup vs") for h in b.headers)]
    assert len(ttt) == 2
    headings = [p for p in paras if p.startswith("On ")][:2]  # the time-to-target tables come first
    by_machine = dict(zip(headings, ttt, strict=True))
    # tf_dense 130.4 s, tf_sampled 95.1 s (medians over seeds; its diverged seed counts as not reached).
    # ... so slide, alone on its machine type, has no tf_dense to be compared with there.
    assert _speedup_cells(by_machine[f"On {EPYC}:"]) == {"tf_dense": "1.00×", "tf_sampled": "1.37×"}
    assert _speedup_cells(by_machine[f"On {XEON}:"]) == {"slide": "—"}
