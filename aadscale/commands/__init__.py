"""Sub-commands of the ``aadscale`` CLI; each module defines ``register(subparsers)``."""
