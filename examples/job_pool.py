"""A ThreadPoolExecutor job pool whose workers record their results through submit_write.

Each job computes the length of the Collatz sequence of its number (CPU work),
then records it with ``submit_write`` and waits for the commit, so a finished
job means a durable result.  At the end the results are read back and each is
checked against the same computation done here.  Exit status 1 on any error,
missing or wrong result.

    python examples/job_pool.py [--jobs 2000] [--workers 8] [--strategy queue] [--db PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from storm.locals import Int, Unicode

import sqlite_storemgr as sm


class JobResult:
    __storm_table__ = "job_result"
    job = Int(primary=True)
    steps = Int()
    worker = Unicode()


def create_schema(store) -> None:
    store.execute("CREATE TABLE IF NOT EXISTS job_result "
                  "(job INTEGER PRIMARY KEY, steps INTEGER NOT NULL, worker TEXT NOT NULL)")


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = 3 * n + 1 if n % 2 else n // 2
        steps += 1
    return steps


def record(store, job: int, steps: int, worker: str) -> int:
    """A write unit: acts only through ``store``, returns a plain value."""
    result = JobResult()
    result.job, result.steps, result.worker = job, steps, worker
    store.add(result)
    return job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--strategy", default="queue", choices=("queue", "single", "mutex",
                                                                "threadlocal"))
    parser.add_argument("--db", help="SQLite file (default: a temporary one, removed at exit)")
    args = parser.parse_args(argv)
    scratch = None if args.db else tempfile.TemporaryDirectory(prefix="storemgr-jobs-")
    path = args.db or os.path.join(scratch.name, "jobs.db")  # scratch goes when main ends

    manager = sm.StoreManager()
    manager.configure("jobs", f"sqlite:{os.path.abspath(path)}?strategy={args.strategy}")
    manager.submit_write(create_schema).result()
    print(f"database {path}, strategy={args.strategy}: {args.jobs} jobs on "
          f"{args.workers} worker threads")

    def job(number: int) -> int:
        steps = collatz_steps(number)
        worker = threading.current_thread().name
        return manager.submit_write(record, number, steps, worker).result()

    began = time.perf_counter()
    done, errors = 0, []
    with ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="job") as pool:
        futures = [pool.submit(job, number) for number in range(1, args.jobs + 1)]
        for future in as_completed(futures):
            try:
                future.result()
                done += 1
            except Exception as error:
                errors.append(error)
    seconds = time.perf_counter() - began

    rows = manager.submit_read(
        lambda store: list(store.find((JobResult.job, JobResult.steps, JobResult.worker)))
    ).result()
    stored = {job: steps for job, steps, _ in rows}
    workers = {worker for _, _, worker in rows}
    stats = manager.stats()
    manager.close()
    wrong = [job for job in range(1, args.jobs + 1) if stored.get(job) != collatz_steps(job)]

    print(f"jobs done: {done} in {seconds:.2f} s ({done / seconds:.0f} jobs/s)")
    print(f"results stored: {len(stored)}, recorded by {len(workers)} worker threads")
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]!r})" if errors else ""))
    print(f"missing or wrong results: {len(wrong)}")
    if "batches" in stats:
        print(f"writer thread: {stats['batches']} group commits, "
              f"mean batch {stats['mean_batch']:.1f}")
    print(f"lock retries: {stats['retries']}, lock wait {stats['lock_wait_seconds']:.3f} s")
    ok = not errors and not wrong and done == len(stored) == args.jobs
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
