#!/usr/bin/env python3
"""Medians per case of benches/compare.sh output: python3 benches/medians.py results.jsonl...

One line per case (the "case" tag compare.sh adds): the median of each figure over the
runs, the per-run values beside it, latency percentiles in ms, and lost / duplicated /
reordered / disconnected summed over all runs. Then the ratios the targets are about
(deliveries per second, switchboard over its peer), one per run: each pair is taken
within one run of compare.sh, never across runs or files.
"""
import json,sys,statistics,collections
rows=collections.defaultdict(list)
# (file, run) -> case -> summary, for the ratios within a run.
runs=collections.defaultdict(dict)
for path in sys.argv[1:]:
    for l in open(path):
        l=l.strip()
        if not l.startswith('{'): continue
        d=json.loads(l); rows[d["case"]].append(d)
        runs[(path,d.get("run"))][d["case"]]=d
def med(xs):
    xs=[x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
for case,ds in rows.items():
    out={"n":len(ds)}
    for k in ("deliveries_per_s","server_cpu_us_per_delivery","bench_cpu_us_per_delivery","server_bytes_per_connection","connects_per_s","server_cpu_us_per_connect","still_open","cpu_us_per_write","round_ms"):
        v=med([d.get(k) for d in ds])
        if v is not None: out[k]=round(v,3); out[k+"_runs"]=[d.get(k) for d in ds]
    lat=[d.get("latency_us") for d in ds if d.get("latency_us")]
    if lat:
        out["p50_ms"]=round(med([x["p50"] for x in lat])/1000,1); out["p99_ms"]=round(med([x["p99"] for x in lat])/1000,1)
        out["p99_runs_ms"]=[round(x["p99"]/1000,1) for x in lat]
    for k in ("lost","duplicated","reordered","disconnected"):
        vs=[d.get(k) for d in ds if d.get(k) is not None]
        if vs: out[k]=sum(vs)
    print(case, json.dumps(out))

RATIOS=[
    ("switchboard fanout N=1000","ncat-chat fanout N=1000"),
    ("switchboard fanout N=200","ncat-chat fanout N=200"),
    ("switchboard fanout N=1000","seed-chat fanout N=1000"),
    ("switchboard fanout N=200","seed-chat fanout N=200"),
    ("switchboard fanout N=1000 window=64","ncat-chat fanout N=1000 window=64"),
    ("ws fanout N=1000","ws-broadcast fanout N=1000"),
    ("ws fanout N=200","ws-broadcast fanout N=200"),
    ("switchboard-history fanout N=1000","switchboard-memory fanout N=1000 beside history"),
]
print()
for ours,theirs in RATIOS:
    per_run=[]
    for cases in runs.values():
        a=cases.get(ours,{}).get("deliveries_per_s"); b=cases.get(theirs,{}).get("deliveries_per_s")
        if a and b: per_run.append(round(a/b,2))
    if per_run:
        print(f"{ours} / {theirs}: median {round(statistics.median(per_run),2)} runs {per_run}")

# Against the machine's floor (benches/floor.sh, run inside each compare.sh run): what
# minimal C programs get on this machine at the same moment, as (label, our case, its
# figure, floor case, its figure); the ratio is ours over the floor.
FLOORS=[
    ("connect+register/s, switchboard bench: switchboard / C server",
     "floor connect: switchboard bench, switchboard server","connects_per_s","floor connect: switchboard bench, c server","connects_per_s"),
    ("connect+register/s against the C server: switchboard bench / C client",
     "floor connect: switchboard bench, c server","connects_per_s","floor connect: C client, c server","connects_per_s"),
    ("connect+register/s, C client: switchboard / C server",
     "floor connect: C client, switchboard server","connects_per_s","floor connect: C client, c server","connects_per_s"),
    ("server CPU per connect+register, C client: switchboard / C server",
     "floor connect: C client, switchboard server","server_cpu_us_per_connect","floor connect: C client, c server","server_cpu_us_per_connect"),
    ("paced 1M/s p99 / one round of 1000 loopback writes of 1 KiB",
     "switchboard paced 1M/s","p99_ms","floor loopback write N=1000 size=1024","round_ms"),
]
def figure(case,key):
    if key=="p99_ms":
        latency=case.get("latency_us")
        return latency["p99"]/1000 if latency else None
    return case.get(key)
lines=[]
for label,ours,our_key,floor,floor_key in FLOORS:
    per_run=[]
    for cases in runs.values():
        if ours in cases and floor in cases:
            a=figure(cases[ours],our_key); b=figure(cases[floor],floor_key)
            if a and b: per_run.append((round(a,1),round(b,1),round(a/b,2)))
    if per_run:
        lines.append(f"{label}: median ratio {round(statistics.median(r[2] for r in per_run),2)} runs (ours, floor, ratio) {per_run}")
if lines:
    print()
    print("\n".join(lines))
