"""Judges one scripts/chaos.sh run: for each fault, reads kg-bench's report and history, the
linearizability verdicts of `kg-bench check`, and the rows PostgreSQL holds after the load,
prints the table and writes it as JSON.

Usage: summarize.py RUN_DIR OUT_JSON FAULT...

Per fault, from RUN_DIR/FAULT.{json,jsonl,check.json,times.json,rows.json}:
- errors by kind, and operations whose outcome is unknown;
- lost acknowledged writes, read back from the database: an acknowledged write is lost when
  another acknowledged write got the same revision (the first was rolled back and its
  revision handed out again), or when it is its key's last acknowledged write and the row
  does not hold it: an older revision, or another value at its revision, or a newer revision
  whose value no write of the history with an unknown outcome wrote;
- stale reads: a GET answered with an older revision than a write of the same key that was
  acknowledged before the GET was sent;
- linearizability violations (kg-bench check);
- time to recover: from the fault's repair to the last failed operation.
Exits 1 when a fault misses its bar: any lost write, stale read or violation; for the
PostgreSQL faults, an error other than a 503 or a recovery slower than 2 s.
"""

import json
import sys

RECOVERY_BOUND_S = 2.0


def judge(run_dir, fault):
    def load(suffix):
        with open(f"{run_dir}/{fault}.{suffix}") as f:
            return json.load(f)

    report, times, checks, rows = load("json"), load("times.json"), load("check.json"), load("rows.json")
    with open(f"{run_dir}/{fault}.jsonl") as f:
        history = [json.loads(line) for line in f]

    writes = [h for h in history if h["op"] in ("put", "cas")]
    acked = [h for h in writes if h["outcome"] == "ok"]
    unknown = [h for h in history if h["outcome"] == "unknown"]

    lost = []
    by_revision = {}
    for write in acked:
        if write.get("revision") is None:
            raise SystemExit(f"{fault}: an acknowledged write without a revision: {write}")
        by_revision.setdefault(write["revision"], []).append(write)
    for same in by_revision.values():
        lost.extend(sorted(same, key=lambda w: w["complete_us"])[:-1])
    last_acked = {}
    for write in acked:
        if write["revision"] > last_acked.get(write["key"], {"revision": -1})["revision"]:
            last_acked[write["key"]] = write
    for key, write in last_acked.items():
        row = rows.get(key)
        if row is None or row["revision"] < write["revision"]:
            lost.append(write)
        elif row["revision"] == write["revision"] and row["value"] != write["value"]:
            lost.append(write)
        elif row["revision"] > write["revision"] and row["value"] not in {
            w["value"] for w in unknown if w["key"] == key
        }:
            lost.append(write)

    stale = 0
    for read in (h for h in history if h["op"] == "get" and h["outcome"] == "ok"):
        seen = read.get("revision") or 0
        newer = [w for w in acked if w["key"] == read["key"] and w["complete_us"] < read["invoke_us"]]
        if any(w["revision"] > seen for w in newer):
            stale += 1

    failed = [h["complete_us"] / 1e6 for h in history if h["outcome"] not in ("ok", "refused")]
    last_failure = max(failed, default=None)
    recovery_s = None if last_failure is None else max(0.0, last_failure - times["fault_end_s"])
    violations = sum(1 for c in checks if c["verdict"] == "violation")
    undecided = sum(1 for c in checks if c["verdict"] == "unknown")

    problems = []
    if lost:
        problems.append(f"{len(lost)} acknowledged write(s) lost")
    if stale:
        problems.append(f"{stale} stale read(s)")
    if violations or undecided:
        problems.append(f"{violations} linearizability violation(s), {undecided} undecided")
    if fault.startswith("pg-"):
        unclean = {kind: n for kind, n in report["errors_by_kind"].items() if kind != "status_503"}
        if unclean:
            problems.append(f"errors other than 503 while PostgreSQL was down: {unclean}")
        if recovery_s is not None and recovery_s > RECOVERY_BOUND_S:
            problems.append(f"recovered in {recovery_s:.2f} s, over {RECOVERY_BOUND_S} s")
    return {
        "fault": fault,
        "requests": report["requests"],
        "errors_by_kind": report["errors_by_kind"],
        "cas_refused": report.get("precondition_failed", 0),
        "acknowledged_writes": len(acked),
        "unknown_outcomes": len(unknown),
        "lost_acknowledged_writes": len(lost),
        "lost_examples": lost[:3],
        "stale_reads": stale,
        "violations": violations,
        "undecided": undecided,
        "recovery_s": recovery_s,
        "problems": problems,
    }


def main():
    run_dir, out_json, faults = sys.argv[1], sys.argv[2], sys.argv[3:]
    results = [judge(run_dir, fault) for fault in faults]
    header = f"{'fault':<14} {'requests':>8}  {'errors':<30} {'unknown':>7} {'acked':>6} {'lost':>4} {'stale':>5} {'violations':>10} {'recovered':>10}"
    print("\n" + header)
    for r in results:
        errors = ", ".join(f"{k.removeprefix('status_')} {v}" for k, v in sorted(r["errors_by_kind"].items())) or "none"
        recovered = "no errors" if r["recovery_s"] is None else f"{r['recovery_s']:.2f} s"
        print(
            f"{r['fault']:<14} {r['requests']:>8}  {errors:<30} {r['unknown_outcomes']:>7} "
            f"{r['acknowledged_writes']:>6} {r['lost_acknowledged_writes']:>4} {r['stale_reads']:>5} "
            f"{r['violations']:>10} {recovered:>10}"
        )
    with open(out_json, "w") as f:
        json.dump(results, f, indent=2)
    failed = [r for r in results if r["problems"]]
    for r in failed:
        print(f"\n{r['fault']}: " + "; ".join(r["problems"]))
        for write in r["lost_examples"]:
            print(f"  lost: {json.dumps(write)}")
    print(f"\nhistories, reports, rows and verdicts in {run_dir}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
