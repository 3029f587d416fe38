"""The package layering stays as utils/__init__.py describes it.

Stages, bottom up: the shared modules of ``utils`` and ``nets``, then
``utils.data``, ``utils.eval``, ``utils.predict``, ``utils.export``,
``utils.train`` and ``utils.demo``. A module may import its own stage and the ones below it, never a
higher one; nothing in the product imports ``benchmarks`` or ``tests``.
Imports inside functions count as much as those at the top of a file.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STAGES = ("utils.data", "utils.eval", "utils.predict", "utils.export", "utils.train", "utils.demo")
FORBIDDEN_EVERYWHERE = ("benchmarks", "tests")


def _module_name(path, root):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _stage_rank(module):
    """0 for shared modules and ``nets``, 1.. for the stages in order, None outside the product."""
    for rank, stage in enumerate(STAGES, start=1):
        if module == stage or module.startswith(stage + "."):
            return rank
    if module.split(".")[0] in ("utils", "nets"):
        return 0
    return None


def _imports(path):
    """Each import statement in the file as (line, the modules it may name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, [alias.name]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from utils import data" names a stage package too.
            yield node.lineno, [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]


def _violation(own_rank, imported):
    """Why importing ``imported`` from a module of rank ``own_rank`` breaks the layering, or None."""
    top = imported.split(".")[0]
    if top in FORBIDDEN_EVERYWHERE:
        return f"product code must not depend on {top}/"
    if own_rank is None:  # a top-level script may use every stage but the demo
        return "only the demo itself uses utils.demo" if _stage_rank(imported) == len(STAGES) else None
    rank = _stage_rank(imported)
    if rank is not None and rank > own_rank:
        return "a lower stage must not import a higher one"
    return None


def layering_violations(root):
    """Lines of "file:line imports X (why)" for every import that breaks the layering."""
    root = Path(root)
    files = sorted(root.glob("*.py")) + sorted((root / "utils").rglob("*.py")) + sorted((root / "nets").rglob("*.py"))
    problems = []
    for path in files:
        module = _module_name(path, root)
        own_rank = _stage_rank(module)
        for line, names in _imports(path):
            for imported in names:
                why = _violation(own_rank, imported)
                if why:
                    problems.append(f"{path.relative_to(root)}:{line} imports {imported} ({why})")
                    break
    return problems


def test_no_module_imports_a_higher_stage_or_benchmarks():
    assert layering_violations(ROOT) == []


def test_every_stage_package_documents_itself():
    for stage in STAGES:
        init = ROOT / Path(*stage.split(".")) / "__init__.py"
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and len(docstring.split()) >= 20, f"{init} needs a paragraph on what the stage does"


def test_the_check_finds_upward_and_benchmark_imports(tmp_path):
    for folder in ("utils/data", "utils/train", "nets"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "utils/__init__.py").write_text("")
    (tmp_path / "utils/data/ok.py").write_text("from utils.config import X\nimport numpy\n")
    (tmp_path / "utils/data/bad.py").write_text("def f():\n    from utils.train.trainer import train\n")
    (tmp_path / "utils/config.py").write_text("from utils import train\n")
    (tmp_path / "nets/yolo.py").write_text("import benchmarks.bench_predict\n")
    (tmp_path / "utils/train/fine.py").write_text("from utils.data import ok\n")
    (tmp_path / "train.py").write_text("from utils.train import fine\nfrom utils.demo import driver\n")

    problems = layering_violations(tmp_path)

    assert len(problems) == 4, problems
    assert any(p.startswith("utils/data/bad.py:2 imports utils.train.trainer") for p in problems)
    assert any(p.startswith("utils/config.py:1 imports utils.train") for p in problems)
    assert any(p.startswith("nets/yolo.py:1 imports benchmarks") for p in problems)
    assert any(p.startswith("train.py:2 imports utils.demo") for p in problems)
