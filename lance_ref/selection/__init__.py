"""Budgeted neuron selection for on-device fine-tuning: NEq velocity, budgets, selection
policies and convs that skip the frozen channels' weight gradients (Quelennec et al., 2024;
specs/selection.md)."""

from .budget import POLICIES, budget_parameters, conv_neurons, greedy_prefix, parse_budget, select
from .layers import SelectiveConv2d
from .selector import NeuronSelector, SelectedFinetune, SelectionOptions
from .velocity import VelocityTracker, cosine_distance

__all__ = [
    "POLICIES", "NeuronSelector", "SelectedFinetune", "SelectionOptions", "SelectiveConv2d", "VelocityTracker", "budget_parameters", "conv_neurons",
    "cosine_distance", "greedy_prefix", "parse_budget", "select",
]
