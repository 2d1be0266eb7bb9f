"""Extraction: teachers turn images into interaction maps (paper Eq. 10-12) written once to a store.

Modules: `teacher` (interface, registry, Eq. 11 + empty policy), `oracle` and `vit_teacher` (offline
teachers), `vlm` (LLaVA-family teacher), `store` (on-disk interaction store), `run` (extraction loop),
`cli` (`lfi extract`, `lfi store`). Nothing is imported here so that each teacher's dependencies load only
when it is used.
"""
