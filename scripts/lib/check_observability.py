#!/usr/bin/env python3
"""check_observability.py: the structural checks of the Grafana dashboard and the metric names
of the dashboard and the alert rules (scripts/check-deploy observability). Owned by the
observability files of issue 11. Python 3.11, standard library only.

  check_observability.py --promtool PROMTOOL --catalogue metrics.txt --alerts alerts.yml DASHBOARD.json

The dashboard: JSON that parses; schemaVersion set; no template variables; every panel has a
unique integer `id`, a `title` and a `gridPos` inside the 24 columns; every panel but a row has
`targets`, each with a unique `refId` and a non-empty `expr`; every datasource is the uid
`prometheus`; the only `$` in a query is `$__rate_interval`. Every query is valid PromQL once
`$__rate_interval` is `1m` (promtool parses each one as a recording rule), and names only
metrics of the catalogue (deploy/observability/metrics.txt; a histogram's _bucket/_sum/_count),
`up` or process_*. The alert rules' `expr`s must pass the same name check.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ALLOWED_VARIABLE = "$__rate_interval"
DATASOURCE_UID = "prometheus"

# PromQL words that look like identifiers but name no metric.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan", "atan2",
}
# Clauses whose parenthesised list holds label names, not metrics.
LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr):
    """The metric names a PromQL expression selects (by a rough but strict tokenizer)."""
    s = STRING.sub('""', expr)
    s = re.sub(r"\{[^{}]*\}", "{}", s)  # label matchers
    s = LABEL_LIST.sub(" ", s)
    s = re.sub(r"\[[^\[\]]*\]", "", s)  # ranges and subqueries
    s = re.sub(r"\boffset\s+-?[\dsmhdwy]+", " ", s)
    names = set()
    for m in IDENT.finditer(s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue  # a function or aggregation, or an operator
        names.add(word)
    return names


def self_test():
    """The tokenizer on known cases, so a broken one cannot pass everything."""
    cases = {
        'sum by (le) (rate(a_bucket{x="y", le=~"1e3"}[5m]))': {"a_bucket"},
        "histogram_quantile(0.99, sum by (le, operation) (rate(b_bucket[1m])))": {"b_bucket"},
        "sum(rate(c[1m])) by (instance) / ignoring(topic) d offset 1h > 0.01": {"c", "d"},
        'e unless on (instance) f{job="up"} or absent(g) * 1e3': {"e", "f", "g"},
        "max_over_time(h[10m:1m]) and bool 2": {"h"},
    }
    for expr, want in cases.items():
        got = metric_names(expr)
        if got != want:
            sys.exit(f"check_observability: self-test: {expr!r} gave {sorted(got)}, expected {sorted(want)}")


def load_catalogue(path):
    allowed = {"up"}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("counter", "gauge", "histogram"):
                sys.exit(f"{path}:{n}: expected 'NAME counter|gauge|histogram', found {line!r}")
            name, kind = parts
            allowed.add(name)
            if kind == "histogram":
                allowed.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return allowed


def name_allowed(name, allowed):
    return name in allowed or name.startswith("process_")


def alert_exprs(path):
    """(line, expr) of every `expr:` in a rule file: plain, quoted or a block scalar."""
    lines = open(path, encoding="utf-8").read().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(?:- )?expr:\s*(.*?)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, rest = len(m.group(1)), m.group(2)
        start = i + 1
        if rest in ("|", "|-", ">", ">-", "|+", ">+"):
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i].strip())
                i += 1
            expr = " ".join(b for b in body if b)
        else:
            if rest[:1] in "'\"" and rest[-1:] == rest[:1]:
                rest = rest[1:-1]
            expr = rest
            i += 1
        if not expr:
            sys.exit(f"{path}:{start}: empty expr")
        out.append((start, expr))
    return out


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels") or [])


def check_dashboard(path, allowed, promtool):
    problems = []
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"{path}: not valid JSON: {e}")
    if not isinstance(dash.get("schemaVersion"), int):
        problems.append("no integer schemaVersion")
    if dash.get("templating", {}).get("list"):
        problems.append("template variables are not allowed (templating.list must be empty)")
    if "__inputs" in dash or "${DS_" in json.dumps(dash):
        problems.append("uses ${DS_...} inputs: name the datasource uid 'prometheus' instead")
    ids = {}
    queries = []
    panels = list(walk_panels(dash.get("panels") or []))
    if not panels:
        problems.append("no panels")
    for p in panels:
        pid, title = p.get("id"), p.get("title")
        where = f"panel {pid!r} ({title!r})"
        if not isinstance(pid, int):
            problems.append(f"{where}: id must be an integer")
        elif pid in ids:
            problems.append(f"{where}: id {pid} also used by {ids[pid]!r}")
        else:
            ids[pid] = title
        if not isinstance(title, str) or not title.strip():
            problems.append(f"{where}: no title")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")) or g["x"] + g["w"] > 24:
            problems.append(f"{where}: gridPos {g} is not inside the 24 columns")
        if p.get("type") == "row":
            continue
        for ds in [p.get("datasource")] + [t.get("datasource") for t in p.get("targets") or []]:
            if ds is not None and (not isinstance(ds, dict) or ds.get("uid") != DATASOURCE_UID):
                problems.append(f"{where}: datasource {ds!r}, expected uid {DATASOURCE_UID!r}")
        targets = p.get("targets")
        if not targets:
            problems.append(f"{where}: no targets")
            continue
        refs = set()
        for t in targets:
            ref, expr = t.get("refId"), t.get("expr")
            if not ref or ref in refs:
                problems.append(f"{where}: refId {ref!r} missing or repeated")
            refs.add(ref)
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{where} {ref}: empty expr")
                continue
            rest = expr.replace(ALLOWED_VARIABLE, "")
            if "$" in rest:
                problems.append(f"{where} {ref}: only {ALLOWED_VARIABLE} may be used, found: {expr}")
                continue
            query = expr.replace(ALLOWED_VARIABLE, "1m")
            for name in sorted(metric_names(query)):
                if not name_allowed(name, allowed):
                    problems.append(f"{where} {ref}: {name} is not in the metrics catalogue")
            queries.append((f"panel_{pid}_{ref}", where, query))
    # promtool parses each query as the expression of a recording rule.
    if queries:
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            f.write("groups:\n  - name: dashboard\n    rules:\n")
            for record, _, query in queries:
                f.write(f"      - record: {record}\n        expr: {json.dumps(query)}\n")
            rules = f.name
        try:
            r = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True)
        finally:
            os.unlink(rules)
        if r.returncode != 0:
            problems.append("promtool refuses a query:\n" + r.stdout + r.stderr)
    return problems, len([p for p in panels if p.get("type") != "row"]), len(queries)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--catalogue", required=True)
    ap.add_argument("--alerts", required=True)
    ap.add_argument("dashboard")
    args = ap.parse_args()
    self_test()
    allowed = load_catalogue(args.catalogue)
    problems, n_panels, n_queries = check_dashboard(args.dashboard, allowed, args.promtool)
    problems = [f"{args.dashboard}: {p}" for p in problems]
    exprs = alert_exprs(args.alerts)
    if not exprs:
        problems.append(f"{args.alerts}: no expr found")
    for line, expr in exprs:
        for name in sorted(metric_names(expr)):
            if not name_allowed(name, allowed):
                problems.append(f"{args.alerts}:{line}: {name} is not in the metrics catalogue")
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"observability: dashboard: {n_panels} panels, {n_queries} queries valid and on catalogue "
          f"metrics; alerts: {len(exprs)} exprs on catalogue metrics", file=sys.stderr)


if __name__ == "__main__":
    main()
