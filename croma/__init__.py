"""croma: cross-modal few-shot generalization by meta-alignment (CROMA) in PyTorch.

The Python API (the command line ``croma`` calls the same functions); ``help(croma.train)``,
``help(croma.TrainConfig)`` and the docs site's API reference describe each part:

    >>> import croma
    >>> bench = croma.load_benchmark("synthetic")   # or croma.prepare_benchmark(your dataset)
    >>> cfg = croma.TrainConfig(iterations=2, ways=3, shots=2, queries=2, meta_batch=4, eval_every=0,
    ...                         model={"embed_dim": 16, "hidden": 16})
    >>> result = croma.train(cfg, bench)            # meta-train (Reptile by default)
    >>> result.iteration
    2
    >>> model = croma.build_model(cfg, bench)       # the architecture; result.best_theta: its weights
    >>> table = croma.evaluate(model, bench, croma.EvalConfig(shots=[1], ways=3, tasks=4, repeats=1),
    ...                        params=result.best_theta)
    >>> [row["shots"] for row in table["rows"]]     # print(croma.format_results(table)): the table
    [1]

* configs: :class:`TrainConfig` (sections ``data``, ``model``, ``inner``, ``outer``, ``eval``,
  ``run``), :class:`EvalConfig`, :class:`BenchmarkConfig`;
* training: :func:`train`, :class:`CromaTrainer`, :class:`MetaLearner`; meta-test:
  :func:`evaluate` (:func:`croma.evaluate.evaluate_kshot`), :func:`evaluate_run` (a run directory),
  :func:`load_run`; a run as a model: :func:`load_model` (``embed``, ``adapt`` -> ``predict``, no
  training data needed); benchmarks: :func:`run_benchmark`;
* data: :func:`load_benchmark`, :func:`records_to_dataset` (dicts -> :class:`CrossModalDataset`),
  :func:`from_torch_dataset` (a map-style ``torch.utils.data.Dataset``), :func:`from_hf_dataset` (a
  Hugging Face ``save_to_disk`` folder, extra ``[hf]``), :func:`prepare_benchmark` (dataset ->
  tensors, splits); :func:`build_model`;
* episodes for your own loops: :class:`ClassificationTaskSampler` (N-way K-shot rows, episode ``i``
  a pure function of ``(seed, i)``), :class:`AlignmentTaskSampler` (cross-modal pair batches);
* registries (:mod:`croma.registry`): :data:`LOSSES`, :data:`ENCODERS`, :data:`METHODS`,
  :data:`DATASETS`, :data:`FAMILIES`, :data:`OUTER_ALGORITHMS`, :data:`BACKBONE_REGISTRIES`, with
  ``register_loss``, ``register_encoder``, ``register_method``, ``register_dataset``,
  ``register_family``, ``register_outer``, ``register_backbone``.
"""

__version__ = "0.1.0"

from croma.backbones import BACKBONE_REGISTRIES, register_backbone
from croma.baselines import METHODS, register_method
from croma.benchmark import BenchmarkConfig, run_benchmark
from croma.config import TrainConfig
from croma.encoders import ENCODERS, register_encoder
from croma.evaluate import EvalConfig, evaluate_kshot, format_results
from croma.factory import build_model, load_bench
from croma.fit import CromaTrainer, TrainResult, train
from croma.learner import MetaLearner
from croma.losses import get_loss, list_losses
from croma.losses.registry import LOSSES, register_loss
from croma.meta.outer import OUTER_ALGORITHMS, register_outer
from croma.meta.tasks import FAMILIES, register_family
from croma.runmodel import AdaptedModel, Prediction, RunModel, load_model
from croma.runs import evaluate_run, load_run
from episodes.data import CrossModalDataset, Item, PreparedBenchmark
from episodes.datasets import DATASETS, load_benchmark, register_dataset
from episodes.datasets.adapters import from_torch_dataset
from episodes.datasets.adapters_hf import from_hf_dataset
from episodes.datasets.manifest import records_to_dataset
from episodes.prepare import prepare_benchmark
from episodes.samplers import AlignmentTask, AlignmentTaskSampler, ClassificationTask, ClassificationTaskSampler

evaluate = evaluate_kshot

__all__ = [
    "__version__", "TrainConfig", "EvalConfig", "BenchmarkConfig", "train", "CromaTrainer", "MetaLearner",
    "TrainResult", "evaluate", "evaluate_kshot", "evaluate_run", "load_run", "load_model", "RunModel", "AdaptedModel",
    "Prediction", "format_results", "run_benchmark",
    "load_benchmark", "load_bench", "records_to_dataset", "prepare_benchmark", "build_model", "CrossModalDataset",
    "Item", "PreparedBenchmark", "get_loss", "list_losses", "LOSSES", "ENCODERS", "METHODS", "DATASETS", "FAMILIES",
    "OUTER_ALGORITHMS", "BACKBONE_REGISTRIES", "register_loss", "register_encoder", "register_method",
    "register_dataset", "register_family", "register_outer", "register_backbone",
    "from_torch_dataset", "from_hf_dataset", "ClassificationTaskSampler", "AlignmentTaskSampler", "ClassificationTask",
    "AlignmentTask",
]
