#!/usr/bin/env python3
"""Run first_click.sql with PyFlink in batch mode (the Flink side of scripts/bench-vs-flink).

    python first_click.py --clicks C --checkouts K --users U --out DIR [--lookback-secs 3600]
    python first_click.py --trivial --out DIR      # start-up cost only: one-row job, same setup

Runs Flink's local MiniCluster inside the JVM that PyFlink starts (no cluster to set up),
with parallelism 2 and as many task slots. Prints one JSON line of phase timings on stdout:
  jvm_start_s  creating the TableEnvironment (JVM + gateway start, classpath load)
  plan_s       registering tables and views (DDL), before the job is submitted
  job_s        submitting the INSERT and waiting for it (planning, MiniCluster start, run)
  total_s      all of it, as measured inside Python (process start is not included)
"""

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def statements(sql_text, params):
    """The statements of a .sql file, comments dropped, placeholders filled in."""
    lines = [ln for ln in sql_text.splitlines() if not ln.lstrip().startswith("--")]
    text = "\n".join(lines)

    def fill(m):
        key = m.group(1)
        if key not in params:
            raise SystemExit(f"first_click.py: no value for placeholder ${{{key}}}")
        return str(params[key])

    text = re.sub(r"\$\{([A-Z_]+)\}", fill, text)
    return [s.strip() for s in re.split(r";\s*$", text, flags=re.M) if s.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clicks")
    ap.add_argument("--checkouts")
    ap.add_argument("--users")
    ap.add_argument("--out", required=True, help="output directory (replaced)")
    ap.add_argument("--lookback-secs", type=int, default=3600)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--slots", type=int, default=None,
                    help="task slots of the local MiniCluster (default: --parallelism)")
    ap.add_argument("--managed-memory", default=None,
                    help="taskmanager.memory.managed.size of the local MiniCluster, e.g. 1g "
                         "(default: Flink's 128m for local execution; sorts and joins spill beyond it)")
    ap.add_argument("--sql", default=str(HERE / "first_click.sql"))
    ap.add_argument("--trivial", action="store_true",
                    help="run a one-row job instead (JVM + MiniCluster start-up cost)")
    ap.add_argument("--explain", action="store_true", help="print the optimized plan to stderr")
    args = ap.parse_args()
    if not args.trivial and not (args.clicks and args.checkouts and args.users):
        ap.error("--clicks, --checkouts and --users are required (or --trivial)")

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)

    t0 = time.monotonic()
    from pyflink.common import Configuration  # noqa: E402 (timed)
    from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: E402 (timed)

    # Options of the local MiniCluster go in at creation. PyFlink's bundled flink-conf.yaml says
    # taskmanager.numberOfTaskSlots: 1, which runs every task of the job one after another on
    # one core whatever the parallelism: give it one slot per unit of parallelism.
    cluster = Configuration()
    cluster.set_string("parallelism.default", str(args.parallelism))
    cluster.set_string("taskmanager.numberOfTaskSlots", str(args.slots or args.parallelism))
    if args.managed_memory:
        cluster.set_string("taskmanager.memory.managed.size", args.managed_memory)
    settings = EnvironmentSettings.new_instance().in_batch_mode().with_configuration(cluster).build()
    tenv = TableEnvironment.create(settings)
    conf = tenv.get_config()
    conf.set("parallelism.default", str(args.parallelism))
    conf.set("table.exec.resource.default-parallelism", str(args.parallelism))
    t1 = time.monotonic()

    if args.trivial:
        conf.set("table.local-time-zone", "UTC")
        tenv.execute_sql(
            f"CREATE TEMPORARY TABLE t (x INT) WITH ('connector' = 'filesystem', "
            f"'path' = '{out}', 'format' = 'json')"
        )
        t2 = time.monotonic()
        tenv.execute_sql("INSERT INTO t VALUES (1)").wait()
    else:
        params = {
            "CLICKS": Path(args.clicks).resolve(),
            "CHECKOUTS": Path(args.checkouts).resolve(),
            "USERS": Path(args.users).resolve(),
            "OUT": out.resolve(),
            "LOOKBACK_SECS": args.lookback_secs,
        }
        stmts = statements(Path(args.sql).read_text(), params)
        insert = None
        for s in stmts:
            m = re.fullmatch(r"SET\s+'([^']+)'\s*=\s*'([^']*)'", s, flags=re.I)
            if m:
                conf.set(m.group(1), m.group(2))
            elif re.match(r"INSERT\s", s, flags=re.I):
                insert = s
            else:
                tenv.execute_sql(s)
        if insert is None:
            raise SystemExit("first_click.py: the SQL file has no INSERT")
        if args.explain:
            print(tenv.explain_sql(insert), file=sys.stderr)
        t2 = time.monotonic()
        tenv.execute_sql(insert).wait()
    t3 = time.monotonic()
    print(json.dumps({
        "jvm_start_s": round(t1 - t0, 3),
        "plan_s": round(t2 - t1, 3),
        "job_s": round(t3 - t2, 3),
        "total_s": round(t3 - t0, 3),
    }))


if __name__ == "__main__":
    main()
