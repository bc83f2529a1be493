"""Names of model outputs: the contract between the model builders, which name their outputs, and the
tasks, training and tracking, which find them by name. No project imports, so every floor can use it.

A model has one output named MAIN_OUTPUT, or a dict of outputs: MAIN_OUTPUT beside auxiliary
training heads (GoogLeNet's side classifiers, "aux<N>", which carry loss weight AUX_LOSS_WEIGHT in
training and are dropped for evaluation and export) or a two-stage detector's PROPOSALS_OUTPUT.
"""

from __future__ import annotations

MAIN_OUTPUT = "predictions"
AUX_LOSS_WEIGHT = 0.3  # GoogLeNet's weight of its auxiliary classifiers' losses (Szegedy et al. 2015)
PROPOSALS_OUTPUT = "rpn"  # a two-stage detector's training output of its region proposal network
