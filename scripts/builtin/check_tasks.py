#!/usr/bin/env python3
"""Reference scorer for the tinytune built-in tasks.

This is the Python reference for `tinytune eval --task NAME`: the Rust code
must give the same numbers for the same predictions. The rules are written
out in www/assets/builtin/tasks/README.md.

Score a file of predictions, one {"prompt": ..., "output": ...} per line, where
"output" is the decoded greedy continuation (EOS already removed; it may still
run past the stop string, which is cut here):

    python3 scripts/builtin/check_tasks.py --task sql --pred preds.jsonl

Check the scorer itself on every task's test split (gold completions must score
100%, empty outputs 0%):

    python3 scripts/builtin/check_tasks.py --self-test

Standard library only.
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
TASKS_DIR = os.path.join(ROOT, "www", "assets", "builtin", "tasks")

# Whitespace, for trimming and normalising: space, \t, \n, \v, \f, \r only.
WS = " \t\n\x0b\x0c\r"
WS_RUN = re.compile("[ \t\n\x0b\x0c\r]+")
WORD = re.compile("[A-Za-z]+")


def cut(output, stop):
    """Keep the text before the first occurrence of the stop string."""
    if stop:
        i = output.find(stop)
        if i >= 0:
            output = output[:i]
    return output


def trim(s):
    return s.strip(WS)


def normalize_ws(s):
    return WS_RUN.sub(" ", s).strip(WS)


class BadJson(ValueError):
    pass


def _no_dupes(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise BadJson("duplicate key %r" % k)
        obj[k] = v
    return obj


def _no_constants(name):
    raise BadJson("not JSON: %s" % name)


def parse_object(text):
    """The trimmed text must be exactly one JSON object (RFC 8259), no duplicate keys."""
    try:
        value = json.loads(text, object_pairs_hook=_no_dupes, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or _has_lone_surrogate(value):
        return None
    return value


def _has_lone_surrogate(v):
    """serde_json rejects escapes like \\ud800 that Python's json accepts; match it."""
    if isinstance(v, str):
        return any(0xD800 <= ord(ch) <= 0xDFFF for ch in v)
    if isinstance(v, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(x) for k, x in v.items())
    if isinstance(v, list):
        return any(_has_lone_surrogate(x) for x in v)
    return False


def score_one(kind, spec, output, gold):
    """1 or 0 for one example. output: already cut at the stop string. gold: the completion."""
    if kind == "exact_match":
        assert spec.get("normalize") == "whitespace"
        return int(normalize_ws(output) == normalize_ws(cut(gold, "\n")))
    if kind in ("json_keys", "json_values"):
        obj = parse_object(trim(output))
        if obj is None or sorted(obj) != sorted(spec["keys"]):
            return 0
        if kind == "json_keys":
            return 1
        want = json.loads(trim(cut(gold, "\n")))
        return int(all(isinstance(obj[k], str) and obj[k] == want[k] for k in spec["keys"]))
    if kind == "style_markers":
        text = normalize_ws(output)
        pre, suf = spec["prefix"], spec["suffix"]
        if not (text.startswith(pre) and text.endswith(suf) and len(text) > len(pre) + len(suf)):
            return 0
        forbidden = [w.lower() for w in spec["forbidden_words"]]
        return int(not any(w.lower() in forbidden for w in WORD.findall(text)))
    if kind == "tinysql_valid":
        return int(tinysql_valid(normalize_ws(output), spec["schema"]))
    raise ValueError("unknown metric kind %r" % kind)


def tinysql_valid(q, schema):
    """The query follows TinySQL's grammar over the schema (a known table, its columns only,
    numbers for number columns and quoted text for text ones). Right or wrong answer alike."""
    if not (q.startswith("FETCH ") and q.endswith(";")) or " FROM " not in q:
        return False
    select, rest = q[len("FETCH "):-1].split(" FROM ", 1)
    m = re.match(r"[A-Za-z0-9_]*", rest)
    table, rest = m.group(0), rest[m.end():]
    if table not in schema:
        return False
    kinds = {c["column"]: c["type"] for c in schema[table]}
    if select not in ("*", "COUNT OF *") and not all(c in kinds for c in select.split(", ")):
        return False
    word = r"([A-Za-z0-9_]*)"
    if rest.startswith(" WHERE "):
        rest = rest[len(" WHERE "):]
        while True:
            m = re.match(word + r" (=|>|<) ", rest)
            if not m or m.group(1) not in kinds:
                return False
            rest = rest[m.end():]
            if kinds[m.group(1)] == "number":
                v = re.match(r"[A-Za-z0-9_]*", rest).group(0)
                if not (v and v.isdigit() and v.isascii()):
                    return False
                rest = rest[len(v):]
            else:
                if not rest.startswith("'") or rest.find("'", 1) <= 1:
                    return False
                rest = rest[rest.find("'", 1) + 1:]
            if not rest.startswith(" AND "):
                break
            rest = rest[len(" AND "):]
    if rest.startswith(" ORDER BY "):
        m = re.match(word + r" (UP|DOWN)", rest[len(" ORDER BY "):])
        if not m or m.group(1) not in kinds:
            return False
        rest = rest[len(" ORDER BY ") + m.end():]
    if rest.startswith(" LIMIT TO "):
        v = re.match(r"[A-Za-z0-9_]*", rest[len(" LIMIT TO "):]).group(0)
        if not (v and v.isdigit() and v.isascii()):
            return False
        rest = rest[len(" LIMIT TO ") + len(v):]
    return rest == ""


def load_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_task(name, tasks_dir=TASKS_DIR):
    d = os.path.join(tasks_dir, name)
    with open(os.path.join(d, "task.json"), encoding="utf-8") as f:
        meta = json.load(f)
    test = load_jsonl(os.path.join(d, meta["files"]["test"]))
    return meta, test


def score(meta, test, outputs):
    """outputs: dict prompt -> raw output. Missing prompts count as wrong.

    Returns [(metric kind, share in [0, 1])], the main metric first."""
    # preference_accuracy is the model's own ranking of a pair, not a score of text: skipped here.
    metrics = [m for m in [meta["metric"]] + meta.get("extra_metrics", []) if m["kind"] != "preference_accuracy"]
    # tinysql_valid reads the task's schema.
    metrics = [dict(m, schema=meta.get("schema")) if m["kind"] == "tinysql_valid" else m for m in metrics]
    totals = [0] * len(metrics)
    for ex in test:
        raw = outputs.get(ex["prompt"])
        if raw is None:
            continue
        out = cut(raw, meta["stop"])
        for i, m in enumerate(metrics):
            totals[i] += score_one(m["kind"], m, out, ex.get("completion", ex.get("chosen")))
    return [(m["kind"], t / len(test)) for m, t in zip(metrics, totals)]


def show(name, label, results):
    parts = ["%s %.1f%%" % (k, 100 * v) for k, v in results]
    print("%-6s %-6s %s" % (name, label, ", ".join(parts)))


def self_test(tasks_dir):
    names = sorted(n for n in os.listdir(tasks_dir) if os.path.isfile(os.path.join(tasks_dir, n, "task.json")))
    ok = True
    for name in names:
        meta, test = load_task(name, tasks_dir)
        # Gold completions, as a model would emit them (it may go on past the stop string).
        gold = score(meta, test, {ex["prompt"]: ex.get("completion", ex.get("chosen")) + "more text" for ex in test})
        empty = score(meta, test, {ex["prompt"]: "" for ex in test})
        show(name, "gold", gold)
        show(name, "empty", empty)
        ok &= all(v == 1.0 for _, v in gold) and all(v == 0.0 for _, v in empty)
    print("self-test", "passed" if ok else "FAILED")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks-dir", default=TASKS_DIR)
    ap.add_argument("--task", help="task name (a folder in --tasks-dir)")
    ap.add_argument("--pred", help="JSONL of {\"prompt\", \"output\"}")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        sys.exit(0 if self_test(args.tasks_dir) else 1)
    if not (args.task and args.pred):
        ap.error("give --task and --pred, or --self-test")
    meta, test = load_task(args.task, args.tasks_dir)
    preds = {}
    for row in load_jsonl(args.pred):
        preds[row["prompt"]] = row["output"]
    known = {ex["prompt"] for ex in test}
    extra = [p for p in preds if p not in known]
    if extra:
        print("warning: %d predictions have prompts that are not in the test split; ignored" % len(extra))
    missing = len(known - set(preds))
    if missing:
        print("warning: %d test prompts have no prediction; scored as wrong" % missing)
    show(args.task, "pred", score(meta, test, preds))


if __name__ == "__main__":
    main()
