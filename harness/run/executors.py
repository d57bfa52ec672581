"""Where a campaign's runs execute: here, one after another (`local`), or over a Dask cluster (`dask`).

An executor takes the runs a campaign planned (`harness.run.runner.plan`) and yields one
`runner.Outcome` per run as each finishes, with the run's record already stored under the
campaign's results folder. The campaign (`runner.run_campaign`) owns everything else: planning,
skipping recorded runs, the results folder's lock, the summary.

`local` is the default and what every campaign did before executors existed: `runner.run_one` for
each run in turn, a fresh worker process on this machine. It imports nothing beyond the harness.

`dask` spreads runs over a Dask distributed cluster with **one run per node**: every worker
advertises one `node` resource and one task slot (``dask worker ... --nthreads 1 --resources
node=1``), and every run asks for the whole node (``resources={"node": 1}``), so two runs never
share a machine and spoil each other's timings. On the node the task calls the same
`runner.run_one` as a local campaign, into a node-local scratch results folder (under the Dask
worker's local directory): the run is the same fresh worker process, with its threads fixed before
import and its perf/cachegrind wrapping as configured. The task returns the record and its event
log (both small) and removes its scratch folder; the client writes them atomically into the
campaign's results folder, so no shared file system is needed. A task that dies with its node
(`KilledWorker` and the like) becomes an `error` record naming the reason, and the campaign goes
on; a later campaign skips it like any recorded run (``--retry-errors`` reruns it).

`distributed` is imported only when a `dask` executor is created, so local campaigns work (and are
tested to work) without it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.run import runner
from harness.spec.workload import RunSpec, build_id
from harness.store import records, results

log = logging.getLogger("slidebench.executors")

NAMES = ("local", "dask")
SCHEDULER_ENV = "SLIDEBENCH_SCHEDULER"
# Long enough for a scheduler across a data centre, short enough that a typo in the address is
# reported before anyone wonders whether the command hangs.
CONNECT_TIMEOUT_S = 10.0
# The resource every Dask worker advertises once and every run asks for whole (docs/distributed.md).
NODE_RESOURCE = "node"
TASK_PREFIX = "slidebench-run"
# A run whose node is lost before it starts is handed out again, this many times at most.
UNSTARTED_RETRIES = 3


class ExecutorUnavailable(ValueError):
    """The executor cannot be used as asked (a missing package, no or a wrong scheduler address).

    A ValueError, so the command line reports it as bad input: one line, exit status 2.
    """


class LocalExecutor:
    """One run at a time on this machine, each in a fresh worker process (`runner.run_one`)."""

    name = "local"

    def run(
        self,
        todo: Sequence[RunSpec],
        results_dir: Path,
        *,
        data_dir: Path | None,
        timeout_s: float | None,
        progress: runner.Progress,
    ) -> Iterator[runner.Outcome]:
        yield from runner.run_here(todo, results_dir, data_dir=data_dir, timeout_s=timeout_s, progress=progress)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def open_executor(name: str, scheduler: str | None = None) -> Iterator[runner.Executor]:
    """The executor called `name` (see NAMES), closed when the block ends."""
    if name == "local":
        if scheduler:
            raise ExecutorUnavailable("--scheduler is for --executor dask; the local executor has none")
        executor: runner.Executor = LocalExecutor()
    elif name == "dask":
        executor = DaskExecutor(scheduler)
    else:
        raise ExecutorUnavailable(f"unknown executor {name!r} (known: {', '.join(NAMES)})")
    try:
        yield executor
    finally:
        executor.close()


# --------------------------------------------------------------------------------------------
# Dask: the part that runs on a node


class RunStopped(RuntimeError):
    """The run's worker process was interrupted on its node (the campaign was abandoned, or someone
    signalled it there). Raised instead of KeyboardInterrupt, which would take the Dask worker's
    task thread down with it."""


def run_on_node(spec: RunSpec, data_dir: Path | None, timeout_s: float | None, token: str) -> dict[str, Any]:
    """The Dask task of one run: `runner.run_one` into a node-local scratch folder.

    Returns the record, its event log as text and where and when it ran; the scratch folder is
    removed whatever happens. `data_dir` None means the node's own $SLIDEBENCH_DATA.
    """
    from distributed import get_worker

    worker = get_worker()
    _drop_nanny_environment(worker)
    base = Path(worker.local_directory) / f"slidebench-{token}"
    base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="results-", dir=base))
    started = time.time()
    # Tells the client the run began: if this node dies from now on, the run failed; before, it
    # never ran and is handed to another node (DaskExecutor.run).
    worker.log_event(
        f"slidebench-{token}", {"key": str(worker.get_current_task()), "host": socket.gethostname()}
    )
    try:
        try:
            outcome = runner.run_one(spec, scratch, data_dir, None, timeout_s)
        except KeyboardInterrupt as exc:
            raise RunStopped(f"run stopped on {socket.gethostname()}: {exc}") from None
        record = dict(records.read(outcome.path))
        events_file = results.events_path(outcome.path)
        events = events_file.read_text(encoding="utf-8") if events_file.exists() else ""
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(OSError):  # another run of the campaign may still use it
            base.rmdir()
    return {
        "record": record,
        "events": events,
        "state": outcome.state,
        "message": outcome.message,
        "wall_s": outcome.wall_s,
        "worker": worker.address,
        "host": socket.gethostname(),
        "started": started,
        "stopped": time.time(),
    }


# The hash seed distributed's Nanny gives its worker processes when none is set (nanny.py).
_NANNY_HASH_SEED = "6640"


def _drop_nanny_environment(worker: Any) -> None:
    """Remove from this Dask worker's environment what its Nanny added for it, so that a run's worker
    process (which inherits this environment) starts as it would in a local campaign.

    The Nanny sets `distributed.nanny.pre-spawn-environ` (MALLOC_TRIM_THRESHOLD_, which changes
    glibc's allocator behaviour and so an engine's timings, and one-thread BLAS settings) and a
    fixed PYTHONHASHSEED. Thread variables are set from the spec by run_one anyway. A variable the
    node's own environment set to the very same value is dropped too; that cannot be told apart.
    """
    import dask

    if getattr(worker, "nanny", None) is None:
        return  # started without a nanny: nothing was added
    added = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    added.setdefault("PYTHONHASHSEED", _NANNY_HASH_SEED)
    for key, value in added.items():
        if value is not None and os.environ.get(key) == str(value):
            del os.environ[key]


def node_facts(engines: Sequence[str]) -> dict[str, Any]:
    """What the client checks on every worker before a campaign: the host and the build of each engine
    (a node with other engine sources would record runs under other run ids)."""
    return {"host": socket.gethostname(), "build_ids": {e: build_id(e) for e in engines}}


def stop_runs(token: str) -> int:
    """End this node's worker processes of the campaign `token` (their command lines name its scratch
    folder): SIGTERM to each one's process group, as a local Ctrl-C does. Returns how many."""
    import psutil

    marker = f"slidebench-{token}"
    groups = set()
    for p in psutil.process_iter(["cmdline"]):
        if any(marker in arg for arg in (p.info.get("cmdline") or ())):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                groups.add(os.getpgid(p.pid))
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    return len(groups)


# --------------------------------------------------------------------------------------------
# Dask: the client side


def _dask_modules() -> tuple[Any, Any]:
    try:
        import dask
        import distributed
    except ImportError as exc:
        raise ExecutorUnavailable(
            f"--executor dask needs the Python package `distributed` ({exc}); install it with "
            "`pip install 'slidebench[dask]'` (requirements.lock pins the version `make` installs)"
        ) from None
    return dask, distributed


class DaskExecutor:
    """Runs over a Dask distributed cluster, one run per node (see the module docstring).

    `address` is the scheduler's (``tcp://HOST:8786``), else $SLIDEBENCH_SCHEDULER. Raises
    ExecutorUnavailable when `distributed` is missing or the scheduler cannot be reached within
    `connect_timeout_s` (default CONNECT_TIMEOUT_S).
    """

    name = "dask"

    def __init__(self, address: str | None = None, *, connect_timeout_s: float | None = None) -> None:
        dask, distributed = _dask_modules()
        connect_timeout_s = CONNECT_TIMEOUT_S if connect_timeout_s is None else connect_timeout_s
        self._distributed = distributed
        self.address = (address or os.environ.get(SCHEDULER_ENV, "")).strip()
        if not self.address:
            raise ExecutorUnavailable(
                f"--executor dask needs the scheduler's address: --scheduler tcp://HOST:8786 or ${SCHEDULER_ENV}"
            )
        # Only a scheduler started in this process (a LocalCluster) reads this; a separate one reads
        # its own configuration, which _check_cluster verifies. A run whose node dies is recorded
        # as an error, not retried on another node: a run that kills its node (out of memory) would
        # kill the next one too, and a retry's timing would not be the first attempt's.
        dask.config.set({"distributed.scheduler.allowed-failures": 0})
        try:
            self.client = distributed.Client(self.address, timeout=connect_timeout_s, set_as_default=False)
        except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ValueError (bad address) alike
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ExecutorUnavailable(
                f"cannot reach the Dask scheduler at {self.address} within {connect_timeout_s:g} s: {reason}"
            ) from None

    def close(self) -> None:
        self.client.close()

    # -- before the first run --------------------------------------------------------------

    def _check_cluster(self, todo: Sequence[RunSpec]) -> None:
        """Refuse workers that run other engine code; warn about what would make runs wait or retry."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        nodes = {a: w for a, w in workers.items() if (w.get("resources") or {}).get(NODE_RESOURCE, 0) >= 1}
        if not nodes:
            log.warning(
                "no worker of %s offers the '%s' resource yet: runs wait until one joins (start workers with "
                "`dask worker %s --nthreads 1 --resources %s=1`, docs/distributed.md)",
                self.address, NODE_RESOURCE, self.address, NODE_RESOURCE,
            )  # fmt: skip
        for addr, w in nodes.items():
            if w["resources"][NODE_RESOURCE] != 1 or w.get("nthreads", 1) > 1:
                log.warning(
                    "worker %s offers %s=%s with %s threads: one run per node needs "
                    "`--nthreads 1 --resources %s=1`",
                    addr, NODE_RESOURCE, w["resources"][NODE_RESOURCE], w.get("nthreads"), NODE_RESOURCE,
                )  # fmt: skip
        engines = sorted({s.engine for s in todo})
        if nodes and engines:
            try:
                facts = self.client.run(node_facts, engines, workers=list(nodes))
            except Exception as exc:  # noqa: BLE001 - whatever a worker raised, the message names it
                raise ExecutorUnavailable(
                    f"the Dask workers of {self.address} cannot run slidebench ({type(exc).__name__}: {exc}); "
                    "install the same slidebench checkout on every node"
                ) from None
            mine = {e: build_id(e) for e in engines}
            for addr, fact in sorted(facts.items()):
                differ = [e for e in engines if fact["build_ids"].get(e) != mine[e]]
                if differ:
                    raise ExecutorUnavailable(
                        f"worker {addr} ({fact['host']}) has other sources for {', '.join(differ)} than this "
                        "checkout, so its runs would get other run ids: install the same commit on every node"
                    )
        try:
            allowed = self.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
        except Exception:  # noqa: BLE001 - an older or locked-down scheduler: nothing to check
            allowed = None
        if allowed:
            log.warning(
                "the scheduler at %s retries a task whose worker died up to %s time(s): a run that kills its "
                "node may take %s more nodes down; start it with "
                "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 (docs/distributed.md)",
                self.address, allowed, allowed,
            )  # fmt: skip

    # -- the campaign ----------------------------------------------------------------------

    def run(
        self,
        todo: Sequence[RunSpec],
        results_dir: Path,
        *,
        data_dir: Path | None,
        timeout_s: float | None,
        progress: runner.Progress,
    ) -> Iterator[runner.Outcome]:
        if not todo:
            return
        self._check_cluster(todo)
        token = uuid.uuid4().hex[:12]
        log.info(
            "%d run(s) for the Dask scheduler at %s, one per node (%d node(s) now)",
            len(todo), self.address, self._node_count(),
        )  # fmt: skip
        # Runs are handed out no faster than nodes free up. The scheduler assigns a task with a
        # resource restriction to a worker at once, where it waits for the resource; if that node
        # then died, every run waiting there would fail with it (KilledWorker) without having started.
        pending = collections.deque((spec, 0) for spec in todo)
        inflight: dict[Any, tuple[RunSpec, int, float]] = {}
        finished = self._distributed.as_completed(loop=self.client.loop)
        done = 0
        try:
            while pending or inflight:
                slots = max(1, self._node_count())
                while pending and len(inflight) < slots:
                    spec, attempt = pending.popleft()
                    future = self.client.submit(
                        run_on_node, spec, data_dir, timeout_s, token,
                        key=f"{TASK_PREFIX}-{spec.run_id}-{token}-{attempt}",
                        resources={NODE_RESOURCE: 1}, pure=False, retries=0,
                    )  # fmt: skip
                    inflight[future] = (spec, attempt, time.monotonic())
                    finished.add(future)
                future = next(finished)
                spec, attempt, submitted = inflight.pop(future)
                if (
                    future.status == "error"
                    and attempt < UNSTARTED_RETRIES
                    and not self._started(token, future.key)
                ):
                    # Its node was lost before the run began: nothing was measured, so it is not a
                    # failed run; it goes back to the front of the queue.
                    log.warning("%s: its node was lost before it started; resubmitting", spec.run_id)
                    future.release()
                    pending.appendleft((spec, attempt + 1))
                    continue
                outcome = self._store(spec, future, Path(results_dir), submitted)
                future.release()
                done += 1
                log.info(
                    "[%d/%d] %s %s threads=%d seed=%d: %s (%s) in %.0fs",
                    done, len(todo), spec.workload, spec.engine, spec.threads, spec.seed,
                    outcome.state, outcome.message, outcome.wall_s,
                )  # fmt: skip
                yield outcome
        except BaseException:
            # Ctrl-C, a lost scheduler, or the caller stopped reading: no run of this campaign may go
            # on training on a node (it would hold the node and its result would be thrown away).
            self._abandon(list(inflight), token)
            raise

    def _node_count(self) -> int:
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return sum(1 for w in workers.values() if (w.get("resources") or {}).get(NODE_RESOURCE, 0) >= 1)

    def _started(self, token: str, key: Any) -> bool:
        """Whether the task `key` of campaign `token` reported that its run began (see run_on_node)."""
        try:
            events = self.client.get_events(f"slidebench-{token}")
        except Exception:  # noqa: BLE001 - unknown counts as started: an error record, never a silent rerun
            return True
        return any(isinstance(msg, Mapping) and msg.get("key") == str(key) for _t, msg in events)

    def _abandon(self, futures: list[Any], token: str) -> None:
        with contextlib.suppress(Exception):
            self.client.cancel(futures, force=True)
        with contextlib.suppress(Exception):
            stopped = self.client.run(stop_runs, token, wait=True)
            n = sum(stopped.values())
            if n:
                log.warning("stopped %d run(s) still running on the cluster", n)

    def _store(self, spec: RunSpec, future: Any, results_dir: Path, submitted: float) -> runner.Outcome:
        """Write the record a task returned (or an error record for a task that died); its Outcome.

        `submitted` (time.monotonic()) dates a lost run's outcome, which has no wall time of its own.
        """
        final = results.record_path(results_dir, spec.workload, spec.engine, spec.run_id)
        events_file = results.events_path(final)
        events_file.parent.mkdir(parents=True, exist_ok=True)
        events_file.unlink(missing_ok=True)  # the log of an attempt that left no record
        try:
            got = future.result()
        except self._cancelled() as exc:
            # Not the run's fault: the client lost its scheduler (or the campaign is being torn down).
            raise ConnectionError(
                f"lost the Dask scheduler at {self.address} ({exc}); finished runs are kept, rerun the "
                "same command to resume"
            ) from None
        except Exception as exc:  # noqa: BLE001 - KilledWorker, a lost connection to the node, a task error
            got = None
            lost = isinstance(exc, self._distributed.KilledWorker)
            message = (
                f"{'its node was lost during the run' if lost else 'its Dask task failed'}: "
                f"{type(exc).__name__}: {exc}"
            )
        if got is not None:
            record, message = got["record"], got["message"]
            if record.get("run_id") != spec.run_id:
                message = (
                    f"worker {got['worker']} ({got['host']}) recorded run id {record.get('run_id')} for "
                    f"{spec.run_id}: it runs other engine sources than this checkout"
                )
                got = None
        if got is None:
            record = runner.failure_record(spec, spec.run_id, message, events_file, _no_counters(message))
            results.EventLog(events_file).emit(records.RUN_STOP, state=records.ERROR, message=message)
            state, wall_s = records.ERROR, time.monotonic() - submitted
        else:
            state, wall_s = record["status"]["state"], float(got["wall_s"])
            placement = {
                "event": records.PLACEMENT, "utc": results.utc_now(), "executor": self.name,
                "scheduler": self.address, "worker": got["worker"], "host": got["host"],
                "started_unix": got["started"], "stopped_unix": got["stopped"],
            }  # fmt: skip
            line = json.dumps(results.jsonable(placement), sort_keys=True)
            results.write_atomic(events_file, got["events"] + line + "\n")
        if final.exists():  # --force: the old record is kept aside, as run_one does
            final.rename(final.with_name(f"{final.name}.replaced-{runner._utc_stamp()}"))
        records.write(final, record)
        return runner.Outcome(
            spec, spec.run_id, final, state, message.splitlines()[0] if message else "", wall_s
        )

    def _cancelled(self) -> tuple[type[BaseException], ...]:
        import asyncio
        import concurrent.futures

        return (concurrent.futures.CancelledError, asyncio.CancelledError)


def _no_counters(reason: str) -> Mapping[str, Any]:
    return records.unavailable_counters(f"no counters: {reason.splitlines()[0]}")
