"""Budgeted neuron selection for on-device fine-tuning: NEq velocity, budgets and selection
policies (Quelennec et al., 2024; specs/selection.md)."""

from .budget import POLICIES, budget_parameters, conv_neurons, greedy_prefix, select
from .velocity import VelocityTracker, cosine_distance

__all__ = ["POLICIES", "VelocityTracker", "budget_parameters", "conv_neurons", "cosine_distance", "greedy_prefix", "select"]
