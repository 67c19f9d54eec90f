"""Defense objectives, each a function returning a dict of loss terms with "loss" the total.

Mode choice (the same in every objective): the training forwards run in whatever mode
the model is in (train mode during training, so BatchNorm uses batch statistics), one
forward per distinct input set; the attacks that make ``x_adv`` run in eval mode.
"""
from aadscale.objectives.aad_loss import aad, mask_attention, preservation, rectification
from aadscale.objectives.alp_loss import alp, alp_terms
from aadscale.objectives.classification import classification_loss, plain
from aadscale.objectives.madry_loss import madry, madry_terms
from aadscale.objectives.registry import OBJECTIVES, ObjectiveKind, build_objective, objective_kind

__all__ = ["madry", "alp", "aad", "plain", "classification_loss", "rectification", "preservation",
           "mask_attention", "madry_terms", "alp_terms", "build_objective", "objective_kind", "OBJECTIVES",
           "ObjectiveKind"]
