"""The packages' imports, read statically: no import circle, and one way down.

Every .py file under xception_jax/ and input_pipeline/ is parsed (ast; nothing is
imported) and every import in it is read, at module level and inside functions
alike. The rules (README, "Layout"):
  - no import cycle among the modules;
  - `xception_jax.models` imports no training code (train, steps, segmentation_steps,
    tasks, optim, step_timing, benchmark), no data code (input_pipeline) and no
    checkpoint code (checkpointing, orbax);
  - `xception_jax.native` (the kernel package) imports nothing from `xception_jax.models`;
  - `input_pipeline` imports neither `xception_jax.models` nor training code (it may
    use `xception_jax.evaluation`'s class-weight helpers);
  - at module level (imports run when a module is imported, not those inside
    functions), the benchmark and the tasks reach no TensorFlow, tfds or clu: the
    benchmark runs on accelerator images without them (docs/PERFORMANCE.md), and only
    what reads data or writes summaries imports them, inside its functions.
The layer rules follow imports through other modules too, including the package
`__init__` that importing `a.b.c` runs (that of `a.b`), and a failure names each import
on the way as file:line. `importlib.import_module("a.b")` with a literal name counts as
an import; a name computed at run time (a registry's table) cannot be read here.
"""
from __future__ import annotations

import ast
import collections
import pathlib
import textwrap
from typing import Iterable, Optional

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("xception_jax", "input_pipeline")
TRAINING = ("xception_jax.train", "xception_jax.steps", "xception_jax.segmentation_steps",
            "xception_jax.tasks", "xception_jax.optim", "xception_jax.step_timing",
            "xception_jax.benchmark")
DATA = ("input_pipeline",)
CHECKPOINT = ("xception_jax.checkpointing", "orbax")
DATA_AND_SUMMARY_LIBRARIES = ("tensorflow", "tensorflow_datasets", "clu")


class _Import(collections.namedtuple("_Import", "target where")):
  """One import: the module it names (`target`) and where it stands ('file.py:12')."""


class ImportGraph:
  """The modules of `packages` under `root` and the imports each file holds."""

  def __init__(self, root: pathlib.Path, packages: Iterable[str] = PACKAGES,
               module_level: bool = False):
    """module_level: read only the imports that run when the module is imported
    (leaving out those inside functions)."""
    self.root, self.module_level = root, module_level
    self.files: dict[str, pathlib.Path] = {}
    for package in packages:
      for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        self.files[".".join(parts)] = path
    self.imports: dict[str, list[_Import]] = {m: self._read(m) for m in self.files}

  def known(self, name: str) -> Optional[str]:
    """`name` or the nearest enclosing module of ours; None for outside modules."""
    while name:
      if name in self.files:
        return name
      name = name.rpartition(".")[0]
    return None

  def _read(self, module: str) -> list[_Import]:
    path = self.files[module]
    where = lambda node: f"{path.relative_to(self.root)}:{node.lineno}"
    found = []
    for node in _nodes(ast.parse(path.read_text(), str(path)), self.module_level):
      if isinstance(node, ast.Import):
        found += [_Import(alias.name, where(node)) for alias in node.names]
      elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        found.append(_Import(node.args[0].value, where(node)))
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the file's package, up level - 1
          package = module.split(".")[:None if path.name == "__init__.py" else -1]
          package = package[:len(package) - node.level + 1]
          base = ".".join(package + ([base] if base else []))
        for alias in node.names:
          submodule = f"{base}.{alias.name}"
          found.append(_Import(submodule if submodule in self.files else base, where(node)))
    return found

  def edges(self, module: str, with_packages: bool = False) -> list[_Import]:
    """The modules of ours that `module` imports; with_packages adds the package
    `__init__`s that importing them runs (marked 'package of <where>')."""
    out = []
    for imp in self.imports[module]:
      target = self.known(imp.target)
      if target is None or target == module:
        continue
      out.append(_Import(target, imp.where))
      if with_packages:
        parent = target.rpartition(".")[0]
        while parent:
          if parent in self.files and parent != module:
            out.append(_Import(parent, f"package of {imp.where}"))
          parent = parent.rpartition(".")[0]
    return out


def _nodes(tree: ast.AST, module_level: bool) -> Iterable[ast.AST]:
  """Every node of `tree`; with module_level, none inside a function or lambda."""
  if not module_level:
    yield from ast.walk(tree)
    return
  todo = collections.deque([tree])
  while todo:
    node = todo.popleft()
    yield node
    todo.extend(child for child in ast.iter_child_nodes(node) if not isinstance(
        child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _inside(name: str, prefixes: Iterable[str]) -> bool:
  return any(name == p or name.startswith(p + ".") for p in prefixes)


def find_cycle(graph: ImportGraph) -> Optional[list[_Import]]:
  """One import cycle as its chain of imports (each names file:line), or None."""
  state: dict[str, int] = {}  # 1 on the current path, 2 done
  path: list[_Import] = []

  def visit(module: str) -> Optional[list[_Import]]:
    state[module] = 1
    for imp in graph.edges(module):
      if state.get(imp.target) == 1:
        start = next((i for i, p in enumerate(path) if p.target == imp.target), -1)
        return path[start + 1:] + [imp] if start >= 0 else path + [imp]
      if imp.target not in state:
        path.append(imp)
        cycle = visit(imp.target)
        if cycle:
          return cycle
        path.pop()
    state[module] = 2
    return None

  for module in sorted(graph.files):
    if module not in state:
      path = [_Import(module, "start")]
      cycle = visit(module)
      if cycle:
        return cycle
  return None


def layer_violations(graph: ImportGraph, layer: str, forbidden: Iterable[str],
                     allowed: Iterable[str] = ()) -> list[str]:
  """Each way the modules of `layer` reach a `forbidden` module, directly or through
  others, as one line naming every import on the way (file:line)."""
  forbidden, allowed = tuple(forbidden), tuple(allowed)
  found = []
  for start in sorted(m for m in graph.files if _inside(m, (layer,))):
    via: dict[str, list[_Import]] = {start: []}
    queue = collections.deque([start])
    while queue:
      module = queue.popleft()
      chain = via[module]
      for imp in graph.imports[module]:  # outside modules too (orbax)
        if _inside(imp.target, forbidden) and graph.known(imp.target) is None:
          found.append(_describe(start, chain + [imp]))
      for imp in graph.edges(module, with_packages=True):
        if _inside(imp.target, allowed) or imp.target in via:
          continue
        if _inside(imp.target, forbidden):
          found.append(_describe(start, chain + [imp]))
          continue
        via[imp.target] = chain + [imp]
        queue.append(imp.target)
  return sorted(set(found))


def _describe(start: str, chain: list[_Import]) -> str:
  return f"{start}: " + " -> ".join(f"{imp.where} imports {imp.target}" for imp in chain)


def _cycle_message(cycle: list[_Import]) -> str:
  return "import cycle: " + " -> ".join(f"{imp.where} imports {imp.target}"
                                        for imp in cycle)


@pytest.fixture(scope="module")
def graph():
  return ImportGraph(REPO)


def test_the_graph_reads_every_module_and_its_imports(graph):
  assert {"xception_jax.models.depthwise", "xception_jax.native", "xception_jax.convert.keras",
          "input_pipeline.pipeline", "input_pipeline"} <= set(graph.files)
  assert len(graph.files) > 60
  targets = {imp.target for imp in graph.edges("xception_jax.models.depthwise")}
  assert {"xception_jax.native", "xception_jax.models.implementations"} <= targets


def test_no_import_cycle(graph):
  cycle = find_cycle(graph)
  assert cycle is None, _cycle_message(cycle)


def test_models_import_no_training_data_or_checkpoint_code(graph):
  bad = layer_violations(graph, "xception_jax.models", TRAINING + DATA + CHECKPOINT)
  assert not bad, "models must not import training, data or checkpoint code:\n" + "\n".join(bad)


def test_native_kernels_import_nothing_from_models(graph):
  bad = layer_violations(graph, "xception_jax.native", ("xception_jax.models",))
  assert not bad, ("xception_jax.native must not import xception_jax.models (pass what it "
                   "needs in):\n" + "\n".join(bad))


def test_input_pipeline_imports_no_model_or_training_code(graph):
  bad = layer_violations(graph, "input_pipeline", ("xception_jax.models",) + TRAINING)
  assert not bad, ("input_pipeline must not import models or training code:\n"
                   + "\n".join(bad))


@pytest.mark.parametrize("layer", ["xception_jax.benchmark", "xception_jax.tasks"])
def test_benchmark_and_tasks_import_no_tensorflow_tfds_or_clu_at_module_level(layer):
  # The tasks are reached through the registry's computed names, so they are a layer of
  # their own here.
  graph = ImportGraph(REPO, module_level=True)
  bad = layer_violations(graph, layer, DATA_AND_SUMMARY_LIBRARIES)
  assert not bad, (f"{layer} must not import {DATA_AND_SUMMARY_LIBRARIES} when imported "
                   "(move the import into the function that reads data or writes "
                   "summaries):\n" + "\n".join(bad))


# ------------------------------------------------------- the checks catch what they should


def _tree(tmp_path, files: dict[str, str]) -> ImportGraph:
  for name, text in files.items():
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
  return ImportGraph(tmp_path)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
  graph = _tree(tmp_path, {
      "xception_jax/__init__.py": "",
      "xception_jax/a.py": "import numpy\nfrom xception_jax import b\n",
      "xception_jax/b.py": "def f():\n  from xception_jax.c import g\n",
      "xception_jax/c.py": "from . import a\n",
      "xception_jax/e.py": "import importlib\nimportlib.import_module('xception_jax.d')\n",
      "xception_jax/d.py": "from xception_jax import a\n",
  })
  message = _cycle_message(find_cycle(graph))
  for step in ("xception_jax/a.py:2 imports xception_jax.b",
               "xception_jax/b.py:2 imports xception_jax.c",
               "xception_jax/c.py:1 imports xception_jax.a"):
    assert step in message, message
  assert "d.py" not in message
  (tmp_path / "xception_jax/c.py").write_text("import numpy\n")
  assert find_cycle(ImportGraph(tmp_path)) is None
  (tmp_path / "xception_jax/c.py").write_text(
      "import importlib\nimportlib.import_module('xception_jax.e')\n")
  assert ("xception_jax/c.py:2 imports xception_jax.e -> xception_jax/e.py:2 imports xception_jax.d"
          in _cycle_message(find_cycle(ImportGraph(tmp_path))))


def test_a_layer_reaching_forbidden_code_is_named_by_file_and_line(tmp_path):
  graph = _tree(tmp_path, {
      "xception_jax/__init__.py": "",
      "xception_jax/models/__init__.py": "",
      "xception_jax/models/m.py": "from xception_jax import helpers\n",
      "xception_jax/models/n.py": "def f():\n  import orbax.checkpoint as ocp\n",
      "xception_jax/helpers.py": "import jax\nfrom xception_jax.evaluation import x\n",
      "xception_jax/evaluation/__init__.py": "from xception_jax.evaluation import x, y\n",
      "xception_jax/evaluation/x.py": "",
      "xception_jax/evaluation/y.py": "from xception_jax.steps import step\n",
      "xception_jax/steps.py": "",
      "input_pipeline/__init__.py": "",
      "input_pipeline/p.py": "from xception_jax.evaluation import x\n",
  })
  bad = layer_violations(graph, "xception_jax.models", TRAINING + DATA + CHECKPOINT)
  assert ("xception_jax.models.m: xception_jax/models/m.py:1 imports xception_jax.helpers"
          " -> package of xception_jax/helpers.py:2 imports xception_jax.evaluation"
          " -> xception_jax/evaluation/__init__.py:1 imports xception_jax.evaluation.y"
          " -> xception_jax/evaluation/y.py:1 imports xception_jax.steps") in bad, bad
  assert ("xception_jax.models.n: xception_jax/models/n.py:2 imports orbax.checkpoint"
          in bad), bad
  # input_pipeline may use evaluation, but not through it reach training code.
  bad = layer_violations(graph, "input_pipeline", ("xception_jax.models",) + TRAINING)
  assert any("input_pipeline/p.py:1" in b and b.endswith("imports xception_jax.steps")
             for b in bad), bad
  (tmp_path / "xception_jax/evaluation/y.py").write_text("import numpy\n")
  assert not layer_violations(ImportGraph(tmp_path), "input_pipeline",
                              ("xception_jax.models",) + TRAINING)


def test_module_level_reading_leaves_out_imports_inside_functions(tmp_path):
  graph = _tree(tmp_path, {
      "xception_jax/__init__.py": "",
      "xception_jax/benchmark.py": "from xception_jax import steps\n",
      "xception_jax/steps.py": ("import jax\ntry:\n  from xception_jax import data\n"
                                "except ImportError:\n  pass\n"),
      "xception_jax/data.py": "def read():\n  import tensorflow as tf\n",
      "xception_jax/summaries.py": "class W:\n  import clu.metric_writers\n",
  })
  lazy = ImportGraph(tmp_path, module_level=True)
  assert not layer_violations(lazy, "xception_jax.benchmark", DATA_AND_SUMMARY_LIBRARIES)
  assert layer_violations(graph, "xception_jax.benchmark", DATA_AND_SUMMARY_LIBRARIES)
  (tmp_path / "xception_jax/steps.py").write_text("from xception_jax import summaries\n")
  bad = layer_violations(ImportGraph(tmp_path, module_level=True), "xception_jax.benchmark",
                         DATA_AND_SUMMARY_LIBRARIES)
  assert bad == ["xception_jax.benchmark: xception_jax/benchmark.py:1 imports "
                 "xception_jax.steps -> xception_jax/steps.py:1 imports xception_jax.summaries"
                 " -> xception_jax/summaries.py:2 imports clu.metric_writers"], bad
