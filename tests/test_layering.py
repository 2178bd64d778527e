"""The import graph's promises: scoring sits below training, the registry and the command
line's choices load without torch."""
import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mpscl"


def _imports(path: Path):
    """Absolute names of the mpscl modules ``path`` imports (relative imports resolved)."""
    pkg = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(pkg[:len(pkg) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module
            yield from (f"{module}.{a.name}" for a in node.names)  # from .. import checkpoint
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_evaluate_imports_nothing_from_training():
    for path in sorted((SRC / "evaluate").glob("*.py")):
        bad = [m for m in _imports(path) if m.startswith(("mpscl.adapt", "mpscl.bench"))]
        assert not bad, f"{path.name} imports {bad}"


def test_registry_and_cli_choices_load_without_torch():
    code = ("import sys; import mpscl.cli as c; c.build_parser(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SRC.parents[1],
                   env={"PYTHONPATH": str(SRC.parent), "PATH": ""})
