# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       format_name: percent
#   kernelspec:
#     name: python3
#     display_name: Python 3
# ---

# %% [markdown]
# # linecube from Python: a finished run, its anomalies, a galaxy, its neighbours, a new cube
#
# Open this page as a notebook with `jupytext --to notebook docs/tutorial.py` (or run it
# as a script). It needs a finished run: the README's first command, run in the
# checkout, makes one (`results/`). `LINECUBE_RUN` may point elsewhere. The test suite
# executes this page on a small run (`tests/test_api.py`).

# %%
import os

import matplotlib

matplotlib.use("Agg")  # drop this line in Jupyter

import linecube

run = linecube.Run(os.environ.get("LINECUBE_RUN", "."))
print(run)

# %% [markdown]
# ## The top anomalies and why
# `score` is the default ranking (`score_hybrid`); `explain_line` is the line whose
# localised residual drives the model's part of it; each row links to Marvin and SkyServer.

# %%
scores = run.scores("ae")
print(scores[["plateifu", "rank", "score", "percentile", "explain_line", "score_features", "score_deep", "marvin"]].head(5))

# %% [markdown]
# ## One galaxy: its maps and its spectrum beside the reconstruction

# %%
g = run.galaxy(scores.plateifu[0])
print(g.plateifu, g.flux.shape, "flux in 1e-17 erg/s/cm^2/A/spaxel; links:", g.marvin, g.skyserver)
fig_maps = g.plot_line_maps()
fig_spec = g.plot_spectrum()
res = g.residuals()
print(res.sort_values(ascending=False).head(5) if res is not None else "no reconstruction kept for this galaxy")

# %% [markdown]
# ## Its neighbours (the same table as `linecube neighbors`)

# %%
print(run.neighbors(g.plateifu, k=5, space="pca"))

# %% [markdown]
# ## Score a cube the model never saw
# Here one of the run's own cubes, scored as if new: it gets its own scores back and
# finds itself first among its neighbours. `linecube score` does the same from the shell.

# %%
from linecube.analysis.newcubes import score_cubes  # noqa: E402

cube = os.environ.get("LINECUBE_NEW_CUBE")
if cube:
    table, latents, rejects = score_cubes(run.root, [cube], model="ae", k=5)
    print(table[["plateifu", "score", "percentile", "explain_line", "explain_spaxel", "neighbors"]].to_string(index=False))
