"""Grad-CAM and attention masks."""
from aadscale.attention.gradcam import (ActivationCapture, CamOutput, capture, find_layer,
                                        forward_with_cam, grad_cam)
from aadscale.attention.masks import area_matched_mask, iou, resize, threshold_mask, topk_mask

__all__ = ["grad_cam", "forward_with_cam", "CamOutput", "capture", "ActivationCapture",
           "find_layer", "threshold_mask", "topk_mask", "area_matched_mask", "iou", "resize"]
