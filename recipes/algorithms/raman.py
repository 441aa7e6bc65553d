"""Raman lines of the AO laser guide stars (RAMAN_LINES): their removal is not implemented
yet (issue 16).

Until it is, an AO exposure given RAMAN_LINES is reduced without it and says so:
:func:`note_not_removed` logs a WARNING and writes ``ESO DRS MUSE PIXTABLE RAMAN = F``
("RAMAN_LINES given, Raman lines not removed") in the pixel table's header, which
muse_scipost carries into PIXTABLE_REDUCED and, as ``ESO DRS MUSE RAMAN``, into
DATACUBE_FINAL. RAMAN_LINES is then not listed among the calibrations used
(``ESO PRO REC1 CALi``). Outside AO modes the lasers are off and the DRS ignores the
file; so does musered.
"""

from __future__ import annotations

import logging
from pathlib import Path

from recipes.algorithms.pixtable import PixTable, pkey
from recipes.io import hkey

logger = logging.getLogger(__name__)

RAMAN_KEY = pkey("RAMAN")  # False: RAMAN_LINES given, Raman lines not removed


def is_ao_mode(mode: str) -> bool:
    """WFM-AO-N, WFM-AO-E and NFM-AO-N (not WFM-NOAO-N/E).

    >>> is_ao_mode("WFM-AO-N"), is_ao_mode("WFM-NOAO-N"), is_ao_mode("NFM-AO-N")
    (True, False, True)
    """
    return "-AO-" in f"-{mode.upper()}-"


def note_not_removed(pt: PixTable, raman_lines: Path | None, mode: str, name: str) -> None:
    """Record that RAMAN_LINES was given to an AO exposure but not applied (see the module
    docstring); nothing when no RAMAN_LINES was given; an info line outside AO modes."""
    if raman_lines is None:
        return
    if not is_ao_mode(mode):
        logger.info("%s: RAMAN_LINES %s not used (INS MODE %s is not an AO mode)", name, raman_lines.name, mode)
        return
    logger.warning("%s: RAMAN_LINES %s given but the Raman lines are NOT removed (not implemented in "
                   "musered, issue 16)", name, raman_lines.name)
    pt.header[hkey(RAMAN_KEY)] = (False, "RAMAN_LINES given, Raman lines not removed")
