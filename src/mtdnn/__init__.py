"""mtdnn: multi-task fine-tuning of pretrained Transformer encoders (MT-DNN, Liu et al. 2019)."""

from .api import Run, load_run
from .config import TrainConfig, make_config
from .errors import ConfigError, DataError, MtdnnError
from .tasks.registry import TaskRegistry
from .training.loop import train
from .version import __version__

__all__ = ["Run", "load_run", "TrainConfig", "make_config", "ConfigError", "DataError", "MtdnnError",
           "TaskRegistry", "train", "__version__"]
