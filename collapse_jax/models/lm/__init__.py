"""Building blocks of the transformer language-model family (``models/transformer_lm.py``):
the network (``net``), the KV-cache sampler (``decode``) and the metrics (``metrics``)."""
