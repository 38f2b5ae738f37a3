"""The long flags src/cli.rs defines, for hack/chart-check.py: read from the
source text of its clap argument structs, following `#[command(flatten)]`
so a group of flags shared by two commands counts for both."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_RS = os.path.join(ROOT, "src", "cli.rs")


def cli_flags():
    """Long flags per clap struct in src/cli.rs: {struct: {flag, ...}}."""
    src = open(CLI_RS).read()
    out = {}
    flattened = {}
    for m in re.finditer(r"pub struct (\w+Args) \{(.*?)\n\}", src, re.S):
        # `#[command(flatten)] pub x: OtherArgs`: OtherArgs's flags are this
        # struct's too.
        flattened[m.group(1)] = re.findall(
            r"#\[command\(flatten\)\]\s*(?:///[^\n]*\s*)*pub \w+: (\w+Args)", m.group(2))
        flags = set()
        for a in re.finditer(r"#\[arg\((.*?)\)\]\s*(?:///[^\n]*\s*)*pub (\w+):", m.group(2), re.S):
            attr, field = a.group(1), a.group(2)
            # Hidden flags are for tests and standalone use: no value.
            if not re.search(r"\blong\b", attr) or re.search(r"\bhide\s*=\s*true\b", attr):
                continue
            named = re.search(r'\blong\s*=\s*"([^"]+)"', attr)
            flags.add(named.group(1) if named else field.replace("_", "-"))
        out[m.group(1)] = flags

    def closure(name, seen=()):
        found = set(out.get(name, set()))
        for inner in flattened.get(name, []):
            if inner not in seen:
                found |= closure(inner, seen + (name,))
        return found

    return {name: closure(name) for name in out}
