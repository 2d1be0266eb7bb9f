"""Extraction: teachers turn images into interaction maps (paper Eq. 10-12) written once to a store.

Modules: `teacher` (interface, registry, Eq. 11 + empty policy), `oracle` and `vit_teacher` (offline
teachers), `vlm` (LLaVA-family teacher), `layout` (on-disk format of a store, standard library only),
`store` (writer, reader, verify, compact), `run` (extraction loop, `run_extraction`). The command line is
`lfi.cli.extract`. Nothing is imported here so that each teacher's dependencies load only when it is used.
"""
