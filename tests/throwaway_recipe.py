"""A throw-away recipe that lives in the test folder, not in recipes/steps: registering it
(``MUSERED_RECIPES=throwaway_recipe``) must be all it takes to see it everywhere."""

from __future__ import annotations

from astropy.io import fits

from recipes.base import Param, Product, Recipe
from recipes.calibs import EXTINCT_TABLE


def run(frames, params, outdir):
    """Sum of the number of input pixel tables and ``offset``, in a header-only product."""
    header = fits.Header({"HIERARCH ESO PRO CATG": "TINY_PRODUCT",
                          "HIERARCH ESO QC TINY NINPUT": len(frames["PIXTABLE_OBJECT"]) + params["offset"]})
    path = outdir / "TINY_PRODUCT.fits"
    fits.PrimaryHDU(header=header).writeto(path)
    return [Product(path, "TINY_PRODUCT", (), {"QC TINY NINPUT": header["HIERARCH ESO QC TINY NINPUT"]})]


RECIPE = Recipe(
    name="muse_throwaway",
    inputs=("PIXTABLE_OBJECT",),
    calibs=(EXTINCT_TABLE.optional(),),
    outputs=("TINY_PRODUCT",),
    params=(Param("offset", int, 0, "added to the number of inputs", minimum=0),),
    run=run,
    group="exposure",
    step="throwaway",
    by_default=False,
    from_recipe="muse_scibasic",
    description="A throw-away recipe registered from the test folder.",
    summary_qc=(("inputs", "QC TINY NINPUT"),),
)
