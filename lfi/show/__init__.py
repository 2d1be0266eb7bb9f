"""Figures and tables of the paper from lfi's own outputs: interaction maps (Fig. 5), human alignment (Fig. 6),
convergence curves (Fig. 3-4), the paper's tables. They read run folders, stores and what the evaluate stage
(`lfi.evaluate`) returns; no teacher runs here. Every figure function returns a matplotlib Figure and, given a
path, writes it as PNG and PDF (`lfi.show.save.save_figure`)."""
