"""The method's published parameters, each defined once with the paper section it comes from.

Every signature default, configuration dataclass and CLI option that carries one of these
values takes it from here, so following a different protocol means changing one line (or
passing the option), never hunting for literals. Plain constants only: ``gpp_models``
imports this module as it imports :mod:`gpp_cubes.contract`.

References
----------
.. [1] Montero, D., Mahecha, M. D., Martinuzzi, F., Aybar, C., Klosterhalfen, A.,
   Knohl, A., et al. (2024). Recurrent neural networks for modelling gross primary
   production. Section numbers below refer to this paper.
"""

from __future__ import annotations

# --- 2.1 Data preparation: study period and sites -------------------------------------------
#: First and last day of the study period (S2 availability and ICOS Warm Winter 2020).
STUDY_START = "2016-01-01"
STUDY_END = "2020-12-31"
#: Radius of the buffer around the eddy-covariance tower for CORINE forest cover and the
#: Sentinel-2 spatial mean [m].
RADIUS_M = 1000.0
#: Minimum CORINE 2018 forest share (classes 311-313) inside the buffer [0-1].
MIN_FOREST_FRACTION = 0.70
#: Largest number of artificial-surface (CORINE 1xx) pixels tolerated inside the buffer.
MAX_ARTIFICIAL_PIXELS = 0
#: Minimum share of days with valid GPP over the study period for a site to be kept [0-1].
MIN_VALID_GPP_FRACTION = 0.60

# --- 2.1 Gross Primary Production -----------------------------------------------------------
#: Minimum daily share of high-quality half-hours (``NEE_VUT_REF_QC``) for a GPP day [0-1].
QC_MIN = 0.70
#: Quantile of the negative tail of the anomalies below which a day is flagged [0-1].
EXTREME_QUANTILE = 0.10
#: Minimum run of consecutive flagged days that makes a climate-induced extreme [days].
EXTREME_MIN_DAYS = 5
#: The paper's reading of its threshold sentence, as :func:`gpp_cubes.targets.extremes.
#: detect_extremes` names it: the 10 % quantile of *all* anomalies (``"quantile"``, about
#: 10 % of days; ``gpp build --extremes-threshold all-anomalies``). Ours is ``"negative_tail"``.
EXTREMES_METHOD = "quantile"

# --- 2.1 Sentinel-2 --------------------------------------------------------------------------
#: Minimum share of clear forest pixels in the buffer for a time step to be kept [0-1].
MIN_CLEAR_FRACTION = 0.01
#: Share of the index variance the retained principal components explain [0-1] (18 PCs).
PCA_VARIANCE = 0.99
#: The paper's fixed number of principal components ("the first 18 PCs"; ``--pcs 18``).
N_PCS = 18
#: The spectral-index list (Awesome Spectral Indices v0.5.0, S2 bands), shipped as data:
#: our default, 132 indices (the file's header states the rule).
INDEX_LIST_RESOURCE = "data/s2_indices.txt"
#: The paper's count, 122 indices, reconstructed with the rule its header states.
PAPER_INDEX_LIST_RESOURCE = "data/s2_indices_paper122.txt"
#: Named index lists (``--index-list NAME``) -> package resource.
INDEX_LISTS = {"default": INDEX_LIST_RESOURCE, "paper-122": PAPER_INDEX_LIST_RESOURCE}

# --- 2.1 Sentinel-1 --------------------------------------------------------------------------
#: Inner and outer radius of the annulus the S1 features are averaged over [m]; the inner
#: radius keeps the tower itself out of the backscatter.
S1_ANNULUS_INNER_M = 50.0
S1_ANNULUS_OUTER_M = RADIUS_M

# --- 2.2 Modelling and evaluation -----------------------------------------------------------
#: Temporal split: training and test years.
TRAIN_YEARS: tuple[int, ...] = (2016, 2017, 2018)
TEST_YEARS: tuple[int, ...] = (2019, 2020)
#: Sequence length of the sequence-to-one models [days].
SEQUENCE_LENGTH = 90
#: Dropout rate of the dropout layers [0-1].
DROPOUT = 0.2
#: Training epochs after tuning (the checkpoint best on the test years is kept).
EPOCHS = 300
#: Hyperband search space: at most this many recurrent layers and units per layer.
MAX_LAYERS = 5
MAX_UNITS = 512
#: Learning-rate search range of Adam, sampled on a log scale.
LEARNING_RATE_RANGE = (1e-4, 1e-2)
