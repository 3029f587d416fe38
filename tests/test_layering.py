"""The package layering stays as utils/__init__.py describes it.

Stages, bottom up: the shared modules of ``utils`` and ``nets``, then
``utils.data``, ``utils.eval``, ``utils.predict``, ``utils.export``, ``utils.label``,
``utils.serve``, ``utils.train``, ``utils.api`` and ``utils.demo``. A module may import
its own stage and the ones below it, never a higher one; nothing in the product
imports ``benchmarks`` or ``tests``.

Weight files sit beside the networks, not inside them: ``utils.weights`` reads and
converts them onto models it is given and never imports ``nets``; the networks take
the path of a weights file, and ``nets.backbones`` (which turns a backbone's
"imagenet" into a file) is the one module of ``nets`` that imports ``utils.weights``.
The PyTorch checkpoint reader imports no framework. No module imports itself back
through others (no import cycle).

Imports inside functions count as much as those at the top of a file.
"""

import ast
from pathlib import Path

from tests.helpers import ROOT

STAGES = ("utils.data", "utils.eval", "utils.predict", "utils.export", "utils.label", "utils.serve", "utils.train",
          "utils.api", "utils.demo")
FORBIDDEN_EVERYWHERE = ("benchmarks", "tests")
WEIGHTS_PACKAGE = "utils.weights"
WEIGHTS_USERS_IN_NETS = ("nets.backbones",)
# Modules that must work without a deep-learning framework: module -> forbidden imports.
FRAMEWORK_FREE = {"utils.weights.torch_checkpoint": ("keras", "tensorflow", "torch")}


def _within(module, package):
    return module == package or module.startswith(package + ".")


def _product_files(root):
    return sorted(root.glob("*.py")) + sorted((root / "utils").rglob("*.py")) + sorted((root / "nets").rglob("*.py"))


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


def _violation(module, own_rank, imported):
    """Why importing ``imported`` from ``module`` (of rank ``own_rank``) breaks the layering, or None."""
    top = imported.split(".")[0]
    if top in FORBIDDEN_EVERYWHERE:
        return f"product code must not depend on {top}/"
    if top in FRAMEWORK_FREE.get(module, ()):
        return f"{module} reads its files without {top}"
    if _within(module, WEIGHTS_PACKAGE) and _within(imported, "nets"):
        return "the weights package is given the models it fills; it never imports the networks"
    if _within(module, "nets") and module not in WEIGHTS_USERS_IN_NETS and _within(imported, WEIGHTS_PACKAGE):
        return (f"the networks take the path of a weights file; only {', '.join(WEIGHTS_USERS_IN_NETS)} "
                f"resolves weights with {WEIGHTS_PACKAGE}")
    if own_rank is None:  # a top-level script may use every stage but the demo
        return "only the demo itself uses utils.demo" if _stage_rank(imported) == len(STAGES) else None
    rank = _stage_rank(imported)
    if rank is not None and rank > own_rank:
        return "a lower stage must not import a higher one"
    return None


def layering_violations(root):
    """Lines of "file:line imports X (why)" for every import that breaks the layering."""
    root = Path(root)
    problems = []
    for path in _product_files(root):
        module = _module_name(path, root)
        own_rank = _stage_rank(module)
        for line, names in _imports(path):
            for imported in names:
                why = _violation(module, own_rank, imported)
                if why:
                    problems.append(f"{path.relative_to(root)}:{line} imports {imported} ({why})")
                    break
    return problems


def import_graph(root):
    """{module: set of the product modules it imports}, for every product module.

    ``from package import name`` counts as an import of ``package.name`` when that is
    a module, else of ``package``; ``import a.b`` as an import of ``a.b``.
    """
    root = Path(root)
    paths = {_module_name(path, root): path for path in _product_files(root)}
    graph = {}
    for module, path in paths.items():
        imported = set()
        for _, names in _imports(path):
            # The names of one statement, most specific first; the first module wins.
            found = next((name for name in names if name in paths), None)
            if found is None:
                continue
            imported.update(name for name in names[:-1] if name in paths)
            imported.add(found)
        imported.discard(module)
        graph[module] = imported
    return graph


def import_cycles(root):
    """Each group of product modules that import one another, directly or through
    others, as a sorted list of names (Tarjan's strongly connected components)."""
    graph = import_graph(root)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_imports_a_higher_stage_or_benchmarks():
    assert layering_violations(ROOT) == []


def test_no_import_cycle():
    assert import_cycles(ROOT) == []


def test_every_stage_package_documents_itself():
    for stage in STAGES:
        init = ROOT / Path(*stage.split(".")) / "__init__.py"
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and len(docstring.split()) >= 20, f"{init} needs a paragraph on what the stage does"


def _write_tree(root, files):
    """Writes ``{relative path: text}`` under ``root``, with an empty ``__init__.py`` in
    every package folder that has none."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for folder in path.relative_to(root).parents:
            init = root / folder / "__init__.py"
            if folder.parts and not init.exists():
                init.write_text("")


def _assert_reported(problems, starts):
    """Each of ``starts`` begins one of ``problems``, and there are no others."""
    assert len(problems) == len(starts), problems
    for start in starts:
        assert any(p.startswith(start) for p in problems), (start, problems)


def test_the_check_finds_upward_and_benchmark_imports(tmp_path):
    _write_tree(tmp_path, {
        "utils/data/ok.py": "from utils.config import X\nimport numpy\n",
        "utils/data/bad.py": "def f():\n    from utils.train.trainer import train\n",
        "utils/config.py": "from utils import train\n",
        "nets/yolo.py": "import benchmarks.bench_predict\n",
        "utils/train/fine.py": "from utils.data import ok\n",
        "train.py": "from utils.train import fine\nfrom utils.demo import driver\n",
    })

    _assert_reported(layering_violations(tmp_path), [
        "utils/data/bad.py:2 imports utils.train.trainer",
        "utils/config.py:1 imports utils.train",
        "nets/yolo.py:1 imports benchmarks",
        "train.py:2 imports utils.demo",
    ])


def test_the_check_finds_weights_imports_that_cross_the_networks(tmp_path):
    _write_tree(tmp_path, {
        "utils/weights/torch_checkpoint.py": "import numpy\nimport keras\n",
        "utils/weights/lite_imagenet.py":
            "from utils.weights.torch_checkpoint import read\nfrom nets.efficientnet_lite import EfficientNetLite\n",
        "nets/backbones.py": "from utils.weights.lite_imagenet import imagenet_weights_file\n",
        "nets/efficientnet_lite.py": "def f():\n    from utils.weights import lite_imagenet\n",
    })

    _assert_reported(layering_violations(tmp_path), [
        "utils/weights/torch_checkpoint.py:2 imports keras",
        "utils/weights/lite_imagenet.py:2 imports nets.efficientnet_lite",
        "nets/efficientnet_lite.py:2 imports utils.weights",
    ])


def test_the_check_finds_import_cycles_through_function_level_imports(tmp_path):
    _write_tree(tmp_path, {
        # The cycle nets/ once had: the converter builds the network, which converts lazily.
        "nets/efficientnet_lite.py": "def build():\n    from nets.pretrained import convert\n",
        "nets/pretrained.py": "from nets.efficientnet_lite import build\n",
        "nets/backbones.py": "from nets import efficientnet_lite\nimport nets.pretrained\n",
        "nets/yolo.py": "from nets.backbones import build\nfrom nets import yolo\n",
    })

    assert import_cycles(tmp_path) == [["nets.efficientnet_lite", "nets.pretrained"]]
    assert import_graph(tmp_path)["nets.backbones"] == {"nets.efficientnet_lite", "nets.pretrained"}
