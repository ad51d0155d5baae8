"""Reads the raw outputs of one scripts/bench.sh run (wrk, kg-bench, pgbench, redis-benchmark),
prints the table of rates, latencies and ratios with the targets, and writes it as JSON.

Rows measured in rounds (NAME.r1, NAME.r2, ...) are combined: the rate is the mean over the
rounds, p50 and p99 are the medians of the rounds' own (close to, not exactly, the percentiles
of all requests), and a ratio against a baseline measured in the same rounds is the median of
the per-round ratios. Each round's figures are kept in the JSON.

Usage: summarize.py RUN_DIR META_JSON OUT_JSON
"""

import glob
import json
import os
import re
import statistics
import sys

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(path):
    """Rate, p50/p99 in ms and error count of a `wrk --latency` output."""
    text = open(path).read()
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not rate:
        raise SystemExit(f"{path}: no 'Requests/sec' line; wrk said:\n{text}")

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else None

    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    requests = re.search(r"(\d+) requests in", text)
    return {
        "rps": float(rate.group(1)),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "requests": int(requests.group(1)) if requests else None,
        "errors": errors,
    }


def kg_bench(path):
    """The same fields from a kg-bench JSON report."""
    report = json.load(open(path))
    latency = report["latency_us"]
    return {
        "rps": report["rps"],
        "p50_ms": latency["p50"] / 1000,
        "p99_ms": latency["p99"] / 1000,
        "requests": report["requests"],
        "errors": report["errors"],
        "nodes": {n: round(v["share"], 3) for n, v in report["nodes"].items()},
    }


def pgbench(run_dir, name):
    """pgbench's tps and, from its per-transaction logs (-l), p50/p99 in ms."""
    text = open(os.path.join(run_dir, f"{name}.txt")).read()
    tps = re.search(r"^tps = ([\d.]+)", text, re.M)
    if not tps:
        raise SystemExit(f"pgbench printed no tps:\n{text}")
    latencies = []
    for log in glob.glob(os.path.join(run_dir, f"{name}.*")):
        if log.endswith(".txt"):
            continue
        for line in open(log):
            fields = line.split()
            if len(fields) >= 3:
                latencies.append(int(fields[2]) / 1000)
    latencies.sort()
    failed = re.search(r"number of failed transactions: (\d+)", text)

    def pct(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else None

    return {
        "rps": float(tps.group(1)),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "requests": len(latencies),
        "errors": int(failed.group(1)) if failed else 0,
    }


def redis_benchmark(path):
    lines = [line.strip().replace('"', "").split(",") for line in open(path) if line.strip()]
    header, rows = lines[0], [r for r in lines[1:] if r[0] == "GET"]
    if not rows:
        raise SystemExit(f"{path}: redis-benchmark printed no GET row")
    row = dict(zip(header, rows[0]))
    return {
        "rps": float(row["rps"]),
        "p50_ms": float(row["p50_latency_ms"]),
        "p99_ms": float(row["p99_latency_ms"]),
        "requests": None,
        "errors": 0,
    }


def in_rounds(run_dir, name, ext, parse):
    """The measurement of NAME combined over its rounds NAME.r1.EXT, NAME.r2.EXT, ..."""
    paths = glob.glob(os.path.join(run_dir, f"{name}.r*.{ext}"))
    numbered = sorted((int(re.search(r"\.r(\d+)\.", os.path.basename(p)).group(1)), p) for p in paths)
    if not numbered:
        raise SystemExit(f"{run_dir}: no rounds of {name}")
    rounds = [parse(p) for _, p in numbered]
    return {
        "rps": statistics.mean(r["rps"] for r in rounds),
        "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
        "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
        "requests": sum(r["requests"] or 0 for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "rounds": rounds,
    }


def ratio_of(row, baseline):
    """ROW's rate over BASELINE's: the median per-round ratio when both ran in the same rounds."""
    if "rounds" in row and "rounds" in baseline and len(row["rounds"]) == len(baseline["rounds"]):
        return statistics.median(a["rps"] / b["rps"] for a, b in zip(row["rounds"], baseline["rounds"]))
    return row["rps"] / baseline["rps"]


def main():
    run_dir, meta, out_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    path = lambda name: os.path.join(run_dir, name)  # noqa: E731
    pgbench_round = lambda p: pgbench(run_dir, os.path.basename(p)[: -len(".txt")])  # noqa: E731

    baselines = {
        "pgbench upsert": in_rounds(run_dir, "pgbench-upsert", "txt", pgbench_round),
        "nginx->static (kg-bench)": in_rounds(run_dir, "static-nginx-kgbench", "json", kg_bench),
        "nginx->static (wrk)": in_rounds(run_dir, "static-nginx-wrk", "wrk", wrk),
        # The latency row's floor: the proxy hop alone, at the same open-model rate.
        "nginx->static at half load (open)": kg_bench(path("static-latency-kgbench.json")),
        "redis-benchmark GET": redis_benchmark(path("redis-get.csv")),
    }
    # (row, tool, measurement, [baselines it is compared with])
    rows = [
        ("PUT via nginx", "kg-bench", in_rounds(run_dir, "put-nginx-kgbench", "json", kg_bench),
         ["pgbench upsert"]),
        ("PUT via nginx", "wrk", in_rounds(run_dir, "put-nginx-wrk", "wrk", wrk), ["pgbench upsert"]),
        ("GET hit via nginx", "kg-bench", in_rounds(run_dir, "get-nginx-kgbench", "json", kg_bench),
         ["nginx->static (kg-bench)", "redis-benchmark GET"]),
        ("GET hit via nginx", "wrk", in_rounds(run_dir, "get-nginx-wrk", "wrk", wrk),
         ["nginx->static (wrk)", "redis-benchmark GET"]),
        ("GET hit direct to n1", "wrk", in_rounds(run_dir, "get-direct-wrk", "wrk", wrk),
         ["nginx->static (wrk)", "redis-benchmark GET"]),
        ("90/10 mix via nginx", "kg-bench", kg_bench(path("mix-nginx-kgbench.json")), []),
        ("GET at half load (open)", "kg-bench", kg_bench(path("get-latency-kgbench.json")), []),
    ]
    table = []
    for name, tool, m, against in rows:
        ratios = {b: ratio_of(m, baselines[b]) for b in against}
        table.append({"row": name, "tool": tool, **m, "ratios": ratios})

    rss = [json.loads(line) for line in open(path("rss.jsonl")) if line.strip()]
    cache = json.load(open(path("cache.json")))
    looked_up = cache["hits"] + cache["misses"]
    cache["hit_ratio"] = cache["hits"] / looked_up if looked_up else None

    def ratio(row, tool, baseline):
        return next(r["ratios"][baseline] for r in table if r["row"] == row and r["tool"] == tool)

    peak_rss_mb = max(r["peak_rss_kb"] for r in rss) / 1024
    latency_row = next(r for r in table if r["row"] == "GET at half load (open)")
    targets = [
        ("PUT via nginx / pgbench upsert (kg-bench)", ">=", 0.8,
         ratio("PUT via nginx", "kg-bench", "pgbench upsert")),
        ("PUT via nginx / pgbench upsert (wrk)", ">=", 0.8,
         ratio("PUT via nginx", "wrk", "pgbench upsert")),
        ("GET hit via nginx / nginx->static (kg-bench)", ">=", 0.5,
         ratio("GET hit via nginx", "kg-bench", "nginx->static (kg-bench)")),
        ("GET hit via nginx / nginx->static (wrk)", ">=", 0.5,
         ratio("GET hit via nginx", "wrk", "nginx->static (wrk)")),
        ("GET p99 via nginx at half load, ms", "<", 5.0, latency_row["p99_ms"]),
        ("peak node RSS, MB", "<", 150.0, peak_rss_mb),
    ]
    target_results = [
        {"target": t, "want": f"{op} {want}", "value": value,
         "met": value >= want if op == ">=" else value < want}
        for t, op, want, value in targets
    ]

    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    print()
    print(f"KeyGrid benchmark {meta['date']}: {meta['connections']} connections, {meta['keys']} keys, "
          f"{meta['duration_s']} s per row in {meta['rounds']} alternating rounds, {meta['profile']} build, {meta['cores']} cores ({meta['cpu']})")
    print()
    header = f"{'row':<26} {'tool':<9} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}  ratio"
    print(header)
    print("-" * len(header))
    for r in table:
        ratios = ", ".join(f"{v:.2f}x {b}" for b, v in r["ratios"].items())
        print(f"{r['row']:<26} {r['tool']:<9} {r['rps']:>9.0f} {fmt(r['p50_ms'], '7.2f')} "
              f"{fmt(r['p99_ms'], '7.2f')} {r['errors']:>6}  {ratios}")
    print()
    print(f"{'baseline':<36} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
    for name, b in baselines.items():
        print(f"{name:<36} {b['rps']:>9.0f} {fmt(b['p50_ms'], '7.2f')} {fmt(b['p99_ms'], '7.2f')}")
    print()
    print("peak RSS: " + ", ".join(f"{r['node']} {r['peak_rss_kb'] / 1024:.1f} MB" for r in rss)
          + f"; cache hit ratio during the GET rows: {fmt(cache['hit_ratio'], '.4f')}")
    print()
    for t in target_results:
        print(f"{'met    ' if t['met'] else 'MISSED '} {t['target']:<46} {t['value']:8.2f}  (want {t['want']})")

    result = {"meta": meta, "rows": table, "baselines": baselines, "rss": rss, "cache": cache,
              "targets": target_results}
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwritten to {out_path}")


if __name__ == "__main__":
    main()
