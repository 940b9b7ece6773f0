"""Token-level tagging (NER, POS, chunking): tag schemes, column and JSONL readers, sub-word
alignment with sliding windows, entity-level metrics and entities with character offsets.

The modules are self-contained: they depend on numpy, transformers/tokenizers and
``mtdnn.errors`` only, never on the training code.
"""
