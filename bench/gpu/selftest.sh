#!/usr/bin/env bash
# bench/gpu.sh's own check (CI runs it after the dry run): a stage cut short by its
# budget still leaves its JSON, status "killed", with what it logged before the cut, and
# the run goes on to gather gpu.json. Needs .carry/ (bash bench/gpu.sh pack).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d /tmp/rargen-gpu-selftest.XXXXXX)
# rargen_optest's "bench" group prints a line every ~0.5 s for ~15 s: 3 s cuts it short
OUT=$out ONLY=optest OPTEST_FILTER=bench BUDGET_OPTEST=3 bash bench/gpu.sh --dry-run > "$out/run.txt" 2>&1
rc=$?
python3 - "$out" "$rc" <<'PY'
import json, sys
out, rc = sys.argv[1], int(sys.argv[2])
j = json.load(open(out + "/optest.json"))
g = json.load(open(out + "/gpu.json"))
ok = (rc == 1 and j["status"] == "killed" and j["rc"] in (124, 137) and "final" not in j
      and j["groups_reached"] == ["bench"] and any("GFLOP/s" in l for l in j["log_tail"])
      and g["status"]["optest"] == "killed" and g["status"]["build"] == "ok" and g["status"]["rar"] == "skipped")
print(f"gpu.sh self-test ({'ok' if ok else 'FAIL'}): optest cut at {j['budget_s']} s -> status {j['status']} (rc {j['rc']}),"
      f" {len(j['log_tail'])} log lines kept; run rc {rc}; gpu.json stages {g['status']}")
sys.exit(0 if ok else 1)
PY
st=$?
[ $st = 0 ] && rm -rf "$out" || { echo "gpu.sh self-test: see $out" >&2; tail -20 "$out/run.txt" >&2; }
exit $st
