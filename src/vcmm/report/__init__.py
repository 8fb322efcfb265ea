"""Reports of runs and sweeps: text/HTML tables, plots, mapping graphs, table dumps.

- :mod:`vcmm.report.tables`: the tables ``vcmm run`` prints and the HTML page shows.
- :mod:`vcmm.report.plots`: matplotlib (Agg) figures as PNG and SVG.
- :mod:`vcmm.report.graph`: the mapping graph as data, text, DOT, SVG, networkx.
- :mod:`vcmm.report.pagetables`: page tables decoded from memory into merged ranges.
- :mod:`vcmm.report.html`: one static HTML page per run.

Plotting modules import matplotlib only when used, so the command line stays quick.
"""
