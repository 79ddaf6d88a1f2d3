"""Read a submission's own code (outside the sandbox) for the constructs that only get around the grader.

Whatever runs in the student's process can be subverted by it: a submission can replace functions of the
grader's modules or of torch, switch off the dispatch and function modes that watch for library calls, start
threads that act later, or hide all this behind ``exec``. None of that is needed to solve an exercise, so the
cells that do it are listed here and the submission is flagged for manual grading (its automatic score stands
until a TA looks). The audit hook (``audit.py``) sees the same escape hatches at run time, where code built
at run time would hide them from this reading.

Only code a student wrote is read: every code cell whose source is not, verbatim, a cell of the instructor's
notebook outside its solutions (what the release handed out, and what nbgrader restores into locked cells).
"""
from __future__ import annotations

import ast
import dataclasses

from IPython.core.inputtransformer2 import TransformerManager

# Modules a solution never needs and an attack does (prefix match on the dotted name).
MODULES = ("ctypes", "gc", "threading", "_thread", "multiprocessing", "concurrent", "subprocess", "signal",
           "importlib", "builtins", "inspect", "IPython.core", "IPython.terminal", "ipykernel", "asyncio", "sys",
           "lecturelib.grading", "lecturelib.checks.core", "lecturelib.checks.runner", "torch.overrides",
           "torch.utils._python_dispatch", "torch._C", "pickle", "marshal", "types", "weakref")
# Built-in functions that run or reach code by name.
NAMES = ("exec", "eval", "compile", "__import__", "setattr", "delattr", "globals", "vars", "get_ipython",
         "__builtins__", "breakpoint", "memoryview")
# Attributes that reach inside functions, frames, classes and modules.
ATTRIBUTES = ("__dict__", "__code__", "__globals__", "__closure__", "__class__", "__subclasses__", "__bases__",
              "__mro__", "__self__", "__func__", "__wrapped__", "__getattribute__", "__setattr__", "__builtins__",
              "f_back", "f_locals", "f_globals", "gi_frame", "tb_frame", "environ", "getenv", "system", "popen",
              "fork", "kill", "setprofile", "settrace", "modules", "addaudithook")
# Line magics an honest notebook uses (IPython rewrites them into get_ipython() calls).
MAGICS = ("%matplotlib", "%timeit", "%time ", "%%time", "%%timeit")


@dataclasses.dataclass(frozen=True)
class Finding:
    cell: int
    line: int
    what: str

    def __str__(self) -> str:
        return f"cell {self.cell}, line {self.line}: {self.what}"


def _python(source: str) -> str:
    """The cell as Python (magics rewritten), with the allowed magic lines blanked first."""
    text = "\n".join("" if line.lstrip().startswith(MAGICS) else line for line in source.splitlines())
    try:
        ast.parse(text)
        return text + "\n"     # plain Python: IPython's transforms (magics, !, ?, prompts) leave it as it is
    except SyntaxError:
        return TransformerManager().transform_cell(text)


class _Reader(ast.NodeVisitor):
    def __init__(self, cell: int):
        self.cell, self.findings, self.modules = cell, [], set()

    def _add(self, node, what: str):
        self.findings.append(Finding(self.cell, getattr(node, "lineno", 0), what))

    def _module(self, node, name: str):
        if any(name == m or name.startswith(m + ".") for m in MODULES):
            self._add(node, f"imports {name}")

    def visit_Import(self, node):
        for alias in node.names:
            self._module(node, alias.name)
            self.modules.add((alias.asname or alias.name).split(".")[0])

    def visit_ImportFrom(self, node):
        module = node.module or ""
        self._module(node, module)
        for alias in node.names:
            self._module(node, f"{module}.{alias.name}")
            self.modules.add(alias.asname or alias.name)
            if alias.name.startswith("_"):
                self._add(node, f"imports the private name {module}.{alias.name}")

    def visit_Name(self, node):
        if node.id in NAMES:
            self._add(node, f"uses {node.id}")

    def visit_Attribute(self, node):
        if node.attr in ATTRIBUTES:
            self._add(node, f"uses .{node.attr}")
        elif node.attr.startswith("_") and not (node.attr.startswith("__") and node.attr.endswith("__")):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in self.modules:
                self._add(node, f"uses the private attribute .{node.attr} of {root.id}")
        self.generic_visit(node)

    def _assigned(self, target):
        if isinstance(target, ast.Attribute):
            root = target.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in self.modules:
                self._add(target, f"assigns to {ast.unparse(target)} (replaces part of a library)")
        elif isinstance(target, (ast.Tuple, ast.List)):
            for item in target.elts:
                self._assigned(item)

    def visit_Assign(self, node):
        for target in node.targets:
            self._assigned(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        self._assigned(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node):
        for target in node.targets:
            self._assigned(target)
        self.generic_visit(node)


def scan(sources: list[tuple[int, str]]) -> list[Finding]:
    """Findings in the given ``(cell index, source)`` pairs; module aliases carry over from cell to cell."""
    findings, modules = [], set()
    for index, source in sources:
        reader = _Reader(index)
        reader.modules = modules
        try:
            tree = ast.parse(_python(source))
        except SyntaxError:
            continue  # the kernel reports it; a cell that does not parse runs nothing
        reader.visit(tree)
        findings += reader.findings
    return findings


def student_cells(nb, source_nb) -> list[tuple[int, str]]:
    """``(index, source)`` of the code cells of ``nb`` that the student wrote or changed: every code cell whose
    source is not that of a non-solution cell of the instructor's ``source_nb``."""
    handed_out = {cell.source.strip() for cell in source_nb.cells
                  if cell.cell_type == "code" and not cell.metadata.get("nbgrader", {}).get("solution")}
    return [(index, cell.source) for index, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and cell.source.strip() not in handed_out]
