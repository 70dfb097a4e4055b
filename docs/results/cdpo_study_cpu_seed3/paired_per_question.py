"""Paired inferential differences to GRPO on one seed, question by question, with their standard error.

    python paired_per_question.py STUDY_OUT/seed-3 VARIANT [VARIANT ...]
"""
import json, math, sys
from pathlib import Path
root = Path(sys.argv[1])
def load(name):
    out = {}
    for l in open(root / "eval" / f"{name}-val" / "predictions.jsonl"):
        r = json.loads(l)
        if r["benchmark"] == "lab_val" and r["question_kind"] == "inferential":
            out[r["id"]] = r["score"] == 1.0
    return out
g = load("grpo")
for name in sys.argv[2:]:
    m = load(name)
    ids = sorted(set(g) & set(m))
    d = [int(m[i]) - int(g[i]) for i in ids]
    n = len(d); mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    print(f"{name:24s} n={n} diff {100*mean:+.1f} SE {100*se:.1f} -> {'holds' if abs(mean) > 2*se else 'not distinguishable'}")
