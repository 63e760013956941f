"""The one registry helper, :class:`Registry` (defined in :mod:`episodes.registry`, which data sets
use and which never imports ``croma``), and the list of every registry in the project.

=================  ============================================  ============================================
registry           object (``Registry`` instance)                public functions
=================  ============================================  ============================================
objectives         ``croma.losses.registry.LOSSES``              ``register_loss``, ``get_loss``,
                                                                 ``list_losses``, ``loss_info``, ``loss_infos``
encoders           ``croma.encoders.ENCODERS``                   ``register_encoder``, ``get_encoder``,
                                                                 ``list_encoders``, ``encoder_hyperparameters``
methods            ``croma.baselines.METHODS``                   ``register_method``, ``get_method``,
                                                                 ``list_methods``, ``methods_for``
data sets          ``episodes.datasets.DATASETS``                ``register_dataset``, ``list_datasets``,
                                                                 ``dataset_info``, ``load_dataset``,
                                                                 ``load_benchmark``
task families      ``croma.meta.tasks.FAMILIES``                 ``register_family``, ``build_family``
backbones          ``croma.backbones.BACKBONE_REGISTRIES``       ``register_backbone``, ``list_backbones``,
                   (one per modality: image, text, audio)        ``check_backbones``, ``build_embedders``;
                                                                 ``BACKBONES`` / ``PRETRAINED`` are views
=================  ============================================  ============================================

Every CLI choice list is read from these at parser-build time (``croma train BENCH``, ``croma
benchmark NAME``, ``croma data NAME``, ``--loss``, ``--methods``, ``--encoder``, ``--backbone``), so
adding an objective, encoder, data set or method is one new file that uses the registry's decorator
plus one import line (``tests/test_extension.py`` registers a toy one of each and runs the CLI).
"""

from episodes.registry import DuplicateNameError, Registry, RegistryError, UnknownNameError

__all__ = ["Registry", "RegistryError", "UnknownNameError", "DuplicateNameError"]
