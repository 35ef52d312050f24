"""Which image pairs the project's TIM training holds out for validation.

A pair is held out when the SHA-256 of its name (the file stem, e.g. ``FLIR_00006``), as an
integer, leaves a remainder below 2 when divided by 5: about two fifths of any folder,
decided by the name alone, so ``gifnet-train-tim`` and ``gifnet-eval --held-out`` agree on
every machine whatever other files a folder holds, and adding pairs never moves an old one
between the sides. Of the 57 shared RoadScene pairs 20 are held out.
"""

from __future__ import annotations

import hashlib


def held_out(name: str) -> bool:
    """Whether the pair named ``name`` (a file stem) is kept out of training."""
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 5 < 2
