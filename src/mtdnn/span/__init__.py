"""Extractive question answering (SQuAD-style answer spans): readers, token windows with
character offsets, n-best span decoding and the SQuAD exact-match / F1 metrics.

The modules are independent building blocks: ``readers`` turns files into ``SpanExample``s,
``windows`` turns examples into fixed-length token windows (the unit of a batch), ``decoding``
turns per-window start/end logits back into answer texts, ``metrics`` scores answer texts.
"""
