"""The README's Python API example is code a user pastes: every name it uses is defined, and its imports exist.

(Running it whole fits three detectors, minutes on a CPU: it was run by hand on the shared bottle; the notebooks,
which `test_notebooks.py` runs, tell the same stories end to end.)
"""
import ast
import builtins
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_api_example():
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    return ast.parse(re.search(r"```python\n(.*?)```", section, re.S).group(1))


def test_the_python_api_example_defines_every_name_it_uses():
    tree = python_api_example()
    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    assert used <= defined, f"the README's Python API example uses undefined names: {sorted(used - defined)}"


def test_the_python_api_example_imports_exist():
    imports = [node for node in python_api_example().body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert imports
    exec(compile(ast.Module(body=imports, type_ignores=[]), "README.md", "exec"), {})
