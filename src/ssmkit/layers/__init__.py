"""One file per model family; every class is a registered SequenceMixer.

Importing this package registers every family (each module applies ``@register_mixer``).
"""
from . import (  # noqa: F401  (registration side effect)
    attention, deltanet, dss, gla, gru, gss, h3, hgrn2, hyena, linear_attention, liquid_s4, lru, lstm,
    mamba, mamba2, mlstm, retnet, rglru, rwkv6, rwkv6_cmix, s4, s4d, s4nd, s5, swa, transformer_xl,
    infini_attention, block_recurrent, rmt, vpt,
)
from .base import MixerConfig, SequenceMixer, log_once, tag_ssm_param
from .bidirectional import Bidirectional
from .call import ForwardCall
from .registry import create_mixer, get_mixer_class, list_mixers, register_mixer, sized_for
from .state import State, detach_state, index_state, map_state

__all__ = [
    "Bidirectional", "ForwardCall", "MixerConfig", "SequenceMixer", "State", "create_mixer", "detach_state",
    "get_mixer_class", "index_state", "list_mixers", "log_once", "map_state", "register_mixer", "sized_for",
    "tag_ssm_param",
]
