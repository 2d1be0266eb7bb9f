"""The interaction store, between extraction and training: what `lfi extract` writes and everything after reads.

Modules: `layout` (on-disk format: paths, store.json, shard headers and digests, the writers' lock; standard
library only, so `lfi store info` imports no torch) and `shards` (`StoreWriter`, `InteractionStore`, verify,
compact). Nothing is imported here, so reading the layout stays light.
"""
