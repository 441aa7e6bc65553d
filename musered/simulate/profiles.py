"""Simulator profiles: the real instrument (``full``) and a small one for tests (``mini``).

A profile fixes the detector read-out format (written into the headers as
``ESO DET OUTn ...``), the number of IFUs (extensions CHAN01..CHANnn), the slice layout
and the wavelength range. Both keep 48 slices per IFU in 4 stacks of 12.
"""

from __future__ import annotations

from dataclasses import dataclass

from recipes.algorithms.instrument import FULL_DETECTOR, DetectorFormat
from recipes.algorithms.slice_layout import LayoutParams

from ..errors import MuseredError


@dataclass(frozen=True)
class Profile:
    """What differs between the simulated instruments.

    ``layout`` holds the slice geometry (pixels of the trimmed CCD) and the wavelength
    solution start (Å at y = 1) and dispersion (Å/px). ``lamp_exptime``/``arc_exptime``
    are the calibration exposure times in seconds.
    """

    name: str
    detector: DetectorFormat
    n_ifus: int
    layout: LayoutParams
    flat_exptime: float = 15.0
    arc_exptime: float = 5.0
    illum_exptime: float = 10.0

    @property
    def lambda_range(self) -> tuple[float, float]:
        """Approximate wavelength range on the CCD (Å)."""
        ny = self.detector.trimmed_shape[0]
        lo = self.layout.lambda_start
        return lo, lo + self.layout.dispersion * (ny - 1)


FULL = Profile(
    name="full",
    detector=FULL_DETECTOR,
    n_ifus=24,
    layout=LayoutParams(),  # 75 px slices, 8 px gaps, 20 px stack gaps, first edge x=42
)

MINI = Profile(
    name="mini",
    detector=DetectorFormat(nx=560, ny=400, prscx=16, prscy=16, ovscx=16, ovscy=16),
    n_ifus=2,
    layout=LayoutParams(
        slice_width=18.5, slice_gap=3.5, stack_gap=6.0, first_edge=30.0, curvature=0.4,
        tilt=1.0, edge_sigma=0.6, lambda_start=5950.0, dispersion_curv=2e-5,
        width_sky=18.0,
    ),
)

PROFILES = {"full": FULL, "mini": MINI}


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (``mini`` or ``full``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise MuseredError(f"unknown simulator profile '{name}' (known: {', '.join(PROFILES)})") from None
