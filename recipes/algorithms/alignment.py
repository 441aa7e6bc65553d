"""Relative alignment of exposures from their IMAGE_FOV (muse_exp_align steps 2-3).

:func:`align_images`: per image, point sources with the adaptive threshold
(:func:`recipes.algorithms.sourcedetect.detect_sources`); their pixel positions to RA/Dec
through the image's WCS, then to the tangent plane of the first image's reference point
[arcsec]; offsets by :func:`recipes.algorithms.offsets_fit.compute_offsets`, turned into
the OFFSET_LIST convention: ``RA_OFFSET``/``DEC_OFFSET`` [deg], the apparent displacement
relative to the first exposure, subtracted to correct (RA_OFFSET a pure difference of RA,
not multiplied by cos δ).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recipes.algorithms.fov import FovImage, tangent_plane
from recipes.algorithms.offsets_fit import compute_offsets
from recipes.algorithms.sourcedetect import Detection, detect_sources

logger = logging.getLogger(__name__)


@dataclass
class AlignResult:
    """What :func:`align_images` found: per exposure the detections and the offsets [deg]."""

    images: list[FovImage]
    detections: list[Detection]
    ra_offset: np.ndarray      # deg of RA, subtract from the exposure's RA
    dec_offset: np.ndarray     # deg, subtract from the exposure's Dec
    nmatch: np.ndarray         # median number of matches with the other exposures
    matched: np.ndarray        # bool: connected to the first exposure by matches


def align_images(images: Sequence[FovImage], rsearch: Sequence[float], nbins: int = 60, weight: bool = True,
                 **detection: Any) -> AlignResult:  # fmt: skip
    """Detect sources in every image and compute the offsets (see the module docstring).

    ``rsearch``: search radii [arcsec] of the offset iterations; ``nbins``: bins of the
    first iteration's histogram; ``weight``: weight matches by flux; ``detection``: the
    keyword arguments of :func:`~recipes.algorithms.sourcedetect.detect_sources`
    (``fwhm``, ``threshold``, ... in pixels and image units).
    """
    detections = []
    for im in images:
        detections.append(detect_sources(im.data, **detection, where=im.label))
        logger.info("%s: %d sources above %.4g (background %.4g, MAD %.3g)", im.label,
                    len(detections[-1].sources), detections[-1].threshold,
                    detections[-1].background.median, detections[-1].background.mad)
    ref = images[0]
    ra0, dec0 = (float(v) for v in ref.wcs.wcs.crval[:2])
    positions, fluxes = [], []
    for im, det in zip(images, detections):
        ra, dec = im.pixel_to_world(det.sources.x, det.sources.y)
        positions.append(tangent_plane(ra, dec, ra0, dec0))
        fluxes.append(det.sources.flux)
    sol = compute_offsets(positions, fluxes, rsearch, nbins, weight)
    for im, ok in zip(images, sol.matched):
        if not ok:
            logger.warning("%s: no source matches the other exposures; offset left at 0 (QC NOMATCH)",
                           im.label)
    cosd = np.cos(np.deg2rad(dec0))
    return AlignResult(list(images), detections, sol.xi / 3600.0 / cosd, sol.eta / 3600.0, sol.nmatch, sol.matched)
