#!/usr/bin/env python3
"""Prints, as JSON, what the Dockerfile's final stage puts in the image:

    hack/dockerfile_facts.py [Dockerfile]
    {"packages": [...], "binary": "/usr/local/bin/rds-csi",
     "entrypoint": [...], "cmd": [...], "user": "65532:65532"}

packages: the names `apt-get install` is given; binary: the destination of
the COPY of rds-csi; entrypoint, cmd: the exec (JSON) forms; user: USER.
hack/image-check.sh compares these with the image hack/image.sh built, so
the two ways of building keep the same layout. Unknown or missing
instructions are reported, never guessed.
"""

import json
import shlex
import sys


def instructions(text):
    """(KEYWORD, arguments) of each instruction, continuation lines joined."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue  # a comment inside a continued instruction
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def final_stage(instrs):
    last = max((i for i, (k, _) in enumerate(instrs) if k == "FROM"), default=-1)
    if last < 0:
        raise SystemExit("Dockerfile: no FROM")
    return instrs[last + 1 :]


def packages(run):
    """Package names after `apt-get install` (flags and `&&` chains aside)."""
    words = shlex.split(run)
    names = []
    for i, w in enumerate(words):
        if w == "install" and i > 0 and words[i - 1] == "apt-get":
            for a in words[i + 1 :]:
                if a in ("&&", "||", ";"):
                    break
                if not a.startswith("-"):
                    names.append(a)
    return names


def facts(text):
    stage = final_stage(instructions(text))
    f = {"packages": [], "binary": None, "entrypoint": None, "cmd": None, "user": None}
    for k, args in stage:
        if k == "RUN":
            f["packages"] += packages(args)
        elif k == "COPY":
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            if len(parts) == 2 and parts[0].rsplit("/", 1)[-1] == "rds-csi":
                f["binary"] = parts[1]
        elif k in ("ENTRYPOINT", "CMD"):
            try:
                f[k.lower()] = json.loads(args)
            except json.JSONDecodeError:
                raise SystemExit(f"Dockerfile: {k} is not in exec (JSON) form: {args}")
        elif k == "USER":
            f["user"] = args
    missing = [k for k, v in f.items() if not v]
    if missing:
        raise SystemExit(f"Dockerfile: its final stage sets no {', '.join(missing)}")
    return f


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "Dockerfile"
    with open(path) as fh:
        print(json.dumps(facts(fh.read()), sort_keys=True))
