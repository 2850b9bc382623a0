"""bench/gpu.sh's stage summaries: one JSON object per stage from its log, and gpu.json.

  python3 summarize.py KIND STAGE LOG RC SECONDS BUDGET OUT
KIND: setup | build | optest | vitest | bench | gather. RC 124/137 (timeout) = "killed":
the summary is then of the partial log, so a stage cut short still reports what ran.
Standard library only (the GPU machine's python3; no Node needed).
"""
import glob
import json
import os
import re
import sys


def tail(text, n=30):
    return text.splitlines()[-n:]


def status_of(rc):
    if rc == 0:
        return "ok"
    if rc in (124, 137):
        return "killed"
    return "failed"


def summarize_setup(text):
    info = {}
    for line in text.splitlines():
        m = re.match(r"^(node|node headers|node_modules|cublaslt_dir|gpu|nvcc|torch): (.*)$", line)
        if m:
            info[m.group(1).replace(" ", "_")] = m.group(2)
        elif re.match(r"^v\d+\.\d+\.\d+$", line):
            info["node_version"] = line
    return info


def summarize_build(text):
    info = {"errors": [l for l in text.splitlines() if re.search(r"error|Error|FAILED", l)][:20]}
    m = re.findall(r"^\[(\d+)/(\d+)\]", text, re.M)
    if m:
        info["steps_done"], info["steps_total"] = int(m[-1][0]), int(m[-1][1])
    m = re.search(r"rargen: (CUDA backend ON[^\n]*|nvcc not found[^\n]*)", text)
    if m:
        info["cuda"] = m.group(1)
    return info


def summarize_optest(text):
    ok = len(re.findall(r"^  ok ", text, re.M))
    fails = re.findall(r"^  FAIL .*$|^FAIL: .*$", text, re.M)
    info = {"checks_ok": ok, "checks_failed": len(fails), "failures": fails[:30]}
    m = re.findall(r"^(\d+) passed, (\d+) failed$", text, re.M)
    if m:
        info["final"] = {"passed": int(m[-1][0]), "failed": int(m[-1][1])}
    groups = re.findall(r"^\[([^\]]+)\]$", text, re.M)
    info["groups_reached"] = groups
    info["cuda"] = [l for l in text.splitlines() if l.startswith("CUDA")][:4]
    # the worst fraction of its tolerance any check used (how tight the table is)
    fr = [float(x) for x in re.findall(r"used ([0-9.eE+-]+) of", text)]
    if fr:
        info["worst_fraction_of_tolerance"] = max(fr)
    return info


def summarize_vitest(text):
    info = {}
    for key in ("Test Files", "Tests"):
        m = re.search(r"^\s*" + key + r"\s+(.*)$", text, re.M)
        if m:
            info[key.lower().replace(" ", "_")] = re.sub(r"\x1b\[[0-9;]*m", "", m.group(1)).strip()
    clean = re.sub(r"\x1b\[[0-9;]*m", "", text)
    info["failed"] = re.findall(r"^\s*(?:×|FAIL)\s+.*$", clean, re.M)[:20]
    info["skipped_because"] = sorted(set(re.findall(r"skipped[^\n]*?: ([^\n]+)", clean)))[:3]
    # the measurements the tests print (errors, margins, near-ties)
    info["measured"] = [l.strip() for l in clean.splitlines() if re.search(r"(err|margin|near-tie|identical|worst|vs cpu)", l)
                        and not re.search(r"^\s*(✓|×|FAIL|❯|→|AssertionError|stdout \|)", l)][:40]
    return info


def summarize_bench(text):
    rows = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    torch = {(r.get("preset"), r.get("batch"), {"fp32": "f32"}.get(r.get("dtype"), r.get("dtype"))): r
             for r in rows if r.get("impl") == "torch"}
    ours = []
    for r in rows:
        if r.get("impl") != "rargen":
            continue
        t = torch.get((r.get("preset"), r.get("batch"), r.get("dtype")))
        r = dict(r)
        r["torch_images_per_s"] = t["images_per_s"] if t else None
        r["speedup_vs_torch"] = round(r["images_per_s"] / t["images_per_s"], 2) if t and t["images_per_s"] else None
        ours.append(r)
    notes = [l for l in text.splitlines() if re.search(r"failed|skipped|linear\(\) uses", l)][:10]
    return {"rargen": ours, "torch": list(torch.values()), "notes": notes}


def gather(out, seconds, budget):
    order = ["setup", "build", "optest", "ext", "rar", "vqgan", "inception", "train", "bench"]
    stages = {}
    for name in order:
        p = os.path.join(out, name + ".json")
        if os.path.exists(p):
            try:
                stages[name] = json.load(open(p))
            except ValueError:
                stages[name] = {"stage": name, "status": "unreadable"}
    addon = None
    if os.path.exists(os.path.join(out, "addon.json")):
        try:
            addon = json.loads(open(os.path.join(out, "addon.json")).read().strip().splitlines()[-1])
        except (ValueError, IndexError):
            addon = None
    return {
        "standin": os.environ.get("RARGEN_GPU_STANDIN") or None,
        "elapsed_s": seconds, "budget_s": budget,
        "status": {k: v.get("status") for k, v in stages.items()},
        "seconds": {k: v.get("seconds") for k, v in stages.items()},
        "addon": addon,
        "stages": stages,
    }


def main():
    kind, stage, log, rc, seconds, budget, out = sys.argv[1:8]
    rc, seconds, budget = int(rc), int(seconds), int(budget)
    if kind == "gather":
        print(json.dumps(gather(out, seconds, budget), indent=1))
        return
    text = open(log, errors="replace").read() if os.path.exists(log) else ""
    res = {"stage": stage, "status": status_of(rc), "rc": rc, "seconds": seconds, "budget_s": budget,
           "log": os.path.basename(log)}
    res.update({"setup": summarize_setup, "build": summarize_build, "optest": summarize_optest,
                "vitest": summarize_vitest, "bench": summarize_bench}[kind](text))
    if res["status"] != "ok":
        res["log_tail"] = tail(text)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
