"""aadscale: adversarial training with attention-based defense (AAD) at scale."""
