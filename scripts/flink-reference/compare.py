#!/usr/bin/env python3
"""Compare firstclick's replay rows with the Flink job's rows (scripts/bench-vs-flink).

    compare.py --firstclick ROWS.ndjson --flink OUT_DIR [--json SUMMARY.json]
               [--clicks C --checkouts K [--lookback-secs 3600]]   # judge the differences

Counts the rows of each side, and compares the sets of (checkout_id, click_id) pairs (click_id
null = organic), then whole rows but processed_at (timestamps compared as instants: Flink writes
04.05Z where firstclick writes 04.050Z). With the inputs given, every checkout on which the two disagree is also judged
against a brute-force evaluation of the rule (docs/design.md §1) on the raw files, which says
which side (if either) credited the right click. Standard library only. Exit status 0 whether
or not they agree (the summary says); 1 on unreadable input.
"""

import argparse
import hashlib
import json
import os
import sys
from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MICRO = timedelta(microseconds=1)


def flink_files(d):
    for root, dirs, files in os.walk(d):
        dirs[:] = [x for x in dirs if not x.startswith(".") and not x.startswith("_")]
        for f in sorted(files):
            if not f.startswith(".") and not f.startswith("_"):
                yield os.path.join(root, f)


def read_rows(paths):
    """checkout_id -> (click_id, click_time, user_name, a digest of the whole row but processed_at
    with times as microseconds); plus the row count and the number of repeated checkout ids."""
    rows, n, dups = {}, 0, 0
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                o = json.loads(line)
                n += 1
                k = o["checkout_id"]
                if k in rows:
                    dups += 1
                o.pop("processed_at", None)
                for c in ("checkout_time", "click_time"):
                    o[c] = micros(o.get(c))
                whole = hashlib.blake2b(json.dumps(o, sort_keys=True).encode(), digest_size=16)
                rows[k] = (o.get("click_id"), o["click_time"], o.get("user_name"), whole.digest())
    return rows, n, dups


def fetch(paths, keys):
    """The rows (as dicts) of the given checkout ids, for printing examples."""
    out = {}
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    o = json.loads(line)
                    if o.get("checkout_id") in keys:
                        out[o["checkout_id"]] = o
    return out


def micros(s):
    """An RFC 3339 / 'YYYY-MM-DD HH:MM:SS.fff' UTC time as integer microseconds (None stays None)."""
    if s is None:
        return None
    dt = datetime.fromisoformat(s)  # Python 3.11+: takes 'Z' and 1-6 (or more) fraction digits
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - EPOCH) // ONE_MICRO


def oracle(keys, clicks_path, checkouts_path, lookback_s):
    """For the given checkout ids: the click the rule credits, from the raw files."""
    want = {}  # checkout_id -> (uid, product, T)
    with open(checkouts_path, encoding="utf-8") as f:
        for line in f:
            try:
                o = json.loads(line)
            except ValueError:
                continue
            k = o.get("checkout_id")
            if k in keys and k not in want:
                want[k] = (int(o["user_id"]), o["product_id"], micros(o["datetime_occured"]))
    pairs = {(u, p) for (u, p, _t) in want.values()}
    by_pair = {}
    with open(clicks_path, encoding="utf-8") as f:
        for line in f:
            try:
                o = json.loads(line)
                pair = (int(o["user_id"]), o["product_id"])
            except (ValueError, KeyError, TypeError):
                continue
            if pair in pairs:
                by_pair.setdefault(pair, set()).add((micros(o["datetime_occured"]), o["click_id"]))
    out = {}
    lb = lookback_s * 1_000_000
    for k, (u, p, t) in want.items():
        cands = sorted(c for c in by_pair.get((u, p), ()) if t - lb <= c[0] <= t)
        out[k] = (cands[0][1] if cands else None, t, cands)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--firstclick", required=True)
    ap.add_argument("--flink", required=True)
    ap.add_argument("--json")
    ap.add_argument("--clicks")
    ap.add_argument("--checkouts")
    ap.add_argument("--lookback-secs", type=int, default=3600)
    ap.add_argument("--examples", type=int, default=5)
    args = ap.parse_args()

    try:
        fc, fc_n, fc_dups = read_rows([args.firstclick])
        files = list(flink_files(args.flink))
        fl, fl_n, fl_dups = read_rows(files)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"compare.py: {e}")

    fc_pairs = {(k, v[0]) for k, v in fc.items()}
    fl_pairs = {(k, v[0]) for k, v in fl.items()}
    only_fc = fc.keys() - fl.keys()
    only_fl = fl.keys() - fc.keys()
    both = fc.keys() & fl.keys()
    click_diff = sorted(k for k in both if fc[k][0] != fl[k][0])
    time_diff = sum(1 for k in both if fc[k][0] == fl[k][0] and fc[k][1] != fl[k][1])
    name_diff = sum(1 for k in both if fc[k][2] != fl[k][2])
    row_diff = [k for k in both if fc[k][3] != fl[k][3]]
    summary = {
        "firstclick_rows": fc_n,
        "firstclick_duplicate_checkout_ids": fc_dups,
        "firstclick_attributed": sum(1 for v in fc.values() if v[0] is not None),
        "flink_rows": fl_n,
        "flink_files": len(files),
        "flink_duplicate_checkout_ids": fl_dups,
        "flink_attributed": sum(1 for v in fl.values() if v[0] is not None),
        "pairs_only_firstclick": len(fc_pairs - fl_pairs),
        "pairs_only_flink": len(fl_pairs - fc_pairs),
        "checkouts_only_firstclick": len(only_fc),
        "checkouts_only_flink": len(only_fl),
        "checkouts_different_click": len(click_diff),
        "same_click_different_click_time": time_diff,
        "different_user_name": name_diff,
        "rows_differing_in_any_column": len(row_diff),
    }
    summary["agree"] = (summary["pairs_only_firstclick"] == 0 and summary["pairs_only_flink"] == 0
                        and fc_dups == 0 and fl_dups == 0)

    print(f"rows: firstclick {fc_n} ({summary['firstclick_attributed']} attributed), "
          f"flink {fl_n} ({summary['flink_attributed']} attributed) in {len(files)} file(s)")
    print(f"(checkout_id, click_id) pairs only in firstclick: {summary['pairs_only_firstclick']}, "
          f"only in flink: {summary['pairs_only_flink']}")
    print(f"checkouts only in firstclick: {len(only_fc)}, only in flink: {len(only_fl)}, "
          f"in both with a different click: {len(click_diff)}; same click but different "
          f"click_time: {time_diff}; different user_name: {name_diff}")
    print(f"rows in both that differ in any column but processed_at (times compared as "
          f"instants): {len(row_diff)}")
    shown = sorted(row_diff)[: args.examples]
    fc_ex, fl_ex = fetch([args.firstclick], set(shown)), fetch(files, set(shown))
    for k in shown:
        a, b = fc_ex[k], fl_ex[k]
        for o in (a, b):
            o.pop("processed_at", None)
            for c in ("checkout_time", "click_time"):
                o[c] = micros(o.get(c))
        print(f"  {k}: " + ", ".join(f"{c}: {a.get(c)!r} vs {b.get(c)!r}"
                                     for c in sorted(a.keys() | b.keys()) if a.get(c) != b.get(c)))
    for k in click_diff[: args.examples]:
        print(f"  {k}: firstclick {fc[k][0]} @ {fc[k][1]}, flink {fl[k][0]} @ {fl[k][1]}")
    for k in sorted(only_fc)[: args.examples]:
        print(f"  only firstclick: {k} -> {fc[k][0]}")
    for k in sorted(only_fl)[: args.examples]:
        print(f"  only flink: {k} -> {fl[k][0]}")

    if click_diff and args.clicks and args.checkouts:
        truth = oracle(set(click_diff), args.clicks, args.checkouts, args.lookback_secs)
        verdict = {"firstclick_right": 0, "flink_right": 0, "neither": 0}
        for k in click_diff:
            right = truth[k][0]
            if fc[k][0] == right:
                verdict["firstclick_right"] += 1
            elif fl[k][0] == right:
                verdict["flink_right"] += 1
            else:
                verdict["neither"] += 1
        summary["verdict_on_differences"] = verdict
        print(f"judged against the rule on the raw files: {verdict}")
        for k in click_diff[: args.examples]:
            right, t, cands = truth[k]
            print(f"  {k} at {t}: rule says {right}; candidates (t, click_id) {cands[:3]}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
