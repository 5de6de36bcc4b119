#!/usr/bin/env python3
"""The seawall verdicts that fail in lab JSON reports, by cell, and where a peer does better.

Usage: verdicts.py REPORT.json...  (one report a seed, or a seed with --quick; ALL=1 prints
every gap, not only those a peer wins within the scenario's amplification threshold)
"""
import collections
import json
import os
import sys

runs = []
for path in sys.argv[1:]:
    report = json.load(open(path))
    runs.append((f"s{report['seed']}{'q' if report['quick'] else ''}", report))

cells = {}
fails = collections.defaultdict(lambda: collections.defaultdict(list))
passed, total = collections.Counter(), collections.Counter()
fair, other = collections.defaultdict(list), collections.defaultdict(list)
for tag, report in runs:
    for scenario in report["scenarios"]:
        cell = scenario["name"]
        cells[cell] = True
        stacks = {s["stack"]: s for s in scenario["stacks"]}
        seawall = stacks.get("seawall")
        if seawall is None:
            continue
        for verdict in seawall["verdicts"]:
            total[tag] += 1
            if verdict["pass"]:
                passed[tag] += 1
            else:
                fails[cell][verdict["threshold"]].append(f"{tag}={verdict['actual']}")
        summary = seawall["summary"]
        goodput = summary["goodput"]
        amp = summary["amplification_fault"] or summary["amplification"]
        amp_max = next(
            (float(v["limit"].split()[-1]) for v in seawall["verdicts"]
             if v["threshold"] == "amplification_fault_max"),
            1.1,
        )
        for name, peer in stacks.items():
            if name == "seawall" or not peer["valid"]:
                continue
            p_goodput = peer["summary"]["goodput"]
            p_amp = peer["summary"]["amplification_fault"] or peer["summary"]["amplification"]
            if None not in (goodput, p_goodput) and p_goodput - goodput > 0.01:
                # A peer past the amplification threshold buys its goodput with retries.
                won = p_amp is None or p_amp <= amp_max
                (fair if won else other)[cell].append(
                    f"{tag} goodput {goodput:.4f} < {name} {p_goodput:.4f} (its A {p_amp:.4f})")
            if name != "unprotected" and None not in (amp, p_amp) and amp - p_amp > 0.01:
                # Lower amplification with less goodput is a trade, not a win.
                won = None not in (goodput, p_goodput) and p_goodput >= goodput - 0.01
                (fair if won else other)[cell].append(
                    f"{tag} A {amp:.4f} > {name} {p_amp:.4f} (goodput {goodput:.4f} / {p_goodput:.4f})")

print("verdicts passed:", ", ".join(f"{t} {passed[t]}/{total[t]}" for t, _ in runs))
print("\nseawall verdicts failing:")
for cell in cells:
    for threshold, actuals in fails[cell].items():
        print(f"  {cell} | {threshold} | {', '.join(actuals)}")
print("\nwhere a peer does better by more than a point:")
for cell in cells:
    for line in fair[cell] + (other[cell] if os.environ.get("ALL") else []):
        print(f"  {cell} | {line}")
print(f"\nother gaps (a peer past the A threshold, or a lower A for less goodput): "
      f"{sum(len(v) for v in other.values())}")
