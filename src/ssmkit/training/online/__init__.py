"""Online learning beyond BPTT: exact real-time recurrent learning for diagonal recurrences.

``build_online_model`` makes [linear encoder] -> LRU / S4D / DSS / S5 / RG-LRU layers -> readout;
``OnlineLearner`` trains it on a stream, one token at a time, with memory independent of the
stream's length. Derivation, exactness and measured numbers: docs/online.md.
"""
from .families import SUPPORTED, online_family
from .learner import OnlineLearner, mse
from .model import OnlineModel, build_online_model

__all__ = ["SUPPORTED", "OnlineLearner", "OnlineModel", "build_online_model", "mse", "online_family"]
