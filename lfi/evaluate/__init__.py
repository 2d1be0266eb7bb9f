"""Evaluation, the stage after training: load a run (or a checkpoint), build its data, run the student and,
where a reference map is asked for, the teacher, and score them with `lfi.metrics`.

Modules: `run` (`lfi eval`: a run's metrics on its test sets), `maps` (a run's interaction maps over image
files and the teacher's C_VLM for them, from its store or a teacher run now; what `lfi viz` draws) and `human`
(`lfi eval-human`: the maps scored against human attention on OSIE, Fig. 6). Figures and tables
(`lfi.show`) draw what these return; they run no teacher themselves.
"""
