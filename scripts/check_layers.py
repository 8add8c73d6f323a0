"""Checks that the C files of the connection core call each other one way.

Each file of src/core is compiled on its own; the symbols it defines and
the ones it uses (nm) give a file-level call graph. Files that call each
other in a cycle form one strongly connected component; the core is
layered when no such component spans more than MAX_CYCLE files (a lower
layer reaches an upper one only through a function pointer it was given,
which the graph does not see).

    python scripts/check_layers.py [--graph]
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

MAX_CYCLE = 3
ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "src" / "core"


def symbols(obj: Path) -> tuple[set[str], set[str]]:
    out = subprocess.run(["nm", str(obj)], check=True, capture_output=True, text=True).stdout
    defined, used = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TDBR":
            defined.add(parts[2])
        elif len(parts) == 2 and parts[0] == "U":
            used.add(parts[1])
    return defined, used


def graph() -> dict[str, set[str]]:
    include = sysconfig.get_paths()["include"]
    flags = ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-D_GNU_SOURCE", "-O0"]
    flags += [f"-I{include}", f"-I{ROOT / 'src' / 'wire'}", f"-I{CORE}"]
    defs: dict[str, set[str]] = {}
    uses: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted(CORE.glob("*.c")):
            obj = Path(tmp) / (src.stem + ".o")
            subprocess.run(["cc", *flags, "-c", str(src), "-o", str(obj)], check=True)
            defs[src.stem], uses[src.stem] = symbols(obj)
    owner = {sym: name for name, syms in defs.items() for sym in syms}
    return {
        name: {owner[s] for s in used if s in owner and owner[s] != name}
        for name, used in uses.items()
    }


def components(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    g = graph()
    if "--graph" in sys.argv:
        for name in sorted(g):
            print(f"{name:10} -> {' '.join(sorted(g[name])) or '-'}")
    cycles = [c for c in components(g) if len(c) > 1]
    worst = max((len(c) for c in cycles), default=1)
    for c in cycles:
        print(f"call cycle of {len(c)} files: {' '.join(c)}")
    print(f"layers: {len(g)} files, largest call cycle {worst} (limit {MAX_CYCLE})")
    return 0 if worst <= MAX_CYCLE else 1


if __name__ == "__main__":
    sys.exit(main())
