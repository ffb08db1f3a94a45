"""UniMSE: unified multimodal sentiment and emotion model (Hu et al., EMNLP 2022).

Text + acoustic + visual fusion over a pluggable backbone; one universal label per utterance.
This package imports neither ``realtime`` nor ``train``.
"""

__version__ = "0.1.0"
