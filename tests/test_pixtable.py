"""Pixel tables: origin bit packing, both file layouts, coordinate conventions, errors."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from recipes.base import RecipeError
from recipes.algorithms.origin import origin_to_ccd, pack_origin, unpack_origin, xoffset_key
from recipes.algorithms.pixtable import WCS_PIXEL, WCS_POSITIONED, WCS_PROJECTED, PixTable, make_pixtable, pkey, set_wcs_state
from recipes.algorithms.projection import celestial_to_native, native_to_celestial


def _random_origins(rng, n):
    ifu = rng.integers(1, 25, n)
    slice_ = rng.integers(1, 49, n)
    xoffset = rng.integers(0, 4000, n)
    x = xoffset + rng.integers(0, 256, n)
    y = rng.integers(1, 4113, n)
    return ifu, slice_, x, y, xoffset


def test_origin_round_trip_is_exact_over_the_full_field_ranges():
    rng = np.random.default_rng(3)
    ifu, slice_, x, y, xoffset = _random_origins(rng, 200_000)
    # the extremes of every field, including bit 31 set (negative as int32)
    ifu[:2], slice_[:2], y[:2] = (1, 24), (1, 48), (1, 8191)
    x[:2] = xoffset[:2] + np.array([0, 255])
    origin = pack_origin(ifu, slice_, x, y, xoffset)
    assert origin.dtype == np.uint32
    got_ifu, got_slice, xs, got_y = unpack_origin(origin)
    np.testing.assert_array_equal(got_ifu, ifu)
    np.testing.assert_array_equal(got_slice, slice_)
    np.testing.assert_array_equal(got_y, y)
    np.testing.assert_array_equal(xs + xoffset, x)
    # the DRS stores origin as int32: unpacking the signed view gives the same fields
    np.testing.assert_array_equal(unpack_origin(origin.view(np.int32))[2], xs)
    # 32-bit words are unpacked without an int64 copy; wider integers give the same fields
    for words in (origin.view(np.int32), origin.astype(np.int64), origin.view(np.int32).astype(np.int64)):
        for got, want in zip(unpack_origin(words), (ifu, slice_, x - xoffset, y)):
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [1, 1000, 300_000])  # one chunk of the kernel, and several
def test_origin_ranges_kernel_matches_reference(n):
    from recipes.kernels.pixtable_build import origin_ranges, origin_ranges_reference

    ifu, slice_, x, y, xoffset = _random_origins(np.random.default_rng(n), n)
    x[:1] = xoffset[:1] + 255  # bit 31 set: negative as int32
    origin = pack_origin(ifu, slice_, x, y, xoffset)
    want = (int(ifu.min()), int(ifu.max()), int(slice_.min()), int(slice_.max()))
    for words in (origin, origin.view(np.int32)):
        assert origin_ranges(words) == origin_ranges_reference(words) == want


def test_update_limits_ifu_and_slice_ranges():
    pt = _table(2000)
    ifu, slice_, _, _ = unpack_origin(pt.origin)
    pt.update_limits()
    for name, col in (("IFU", ifu), ("SLICE", slice_)):
        assert pt.header[pkey("LIMITS", name, "LOW")] == int(col.min())
        assert pt.header[pkey("LIMITS", name, "HIGH")] == int(col.max())
    assert pt.header[pkey("LIMITS", "X", "HIGH")] == pytest.approx(float(pt.xpos.max()))


def test_origin_bit_layout_matches_the_drs_shifts():
    # slice 5, IFU 7, y 1000, x - xoffset 33 -> bits 0-5, 6-10, 11-23, 24-31
    assert int(pack_origin(7, 5, 133, 1000, 100)) == (33 << 24) | (1000 << 11) | (7 << 6) | 5


def test_pack_origin_rejects_fields_that_do_not_fit():
    with pytest.raises(ValueError, match="x - xoffset"):
        pack_origin(1, 1, 400, 1, 100)
    with pytest.raises(ValueError, match="IFU"):
        pack_origin(25 + 7, 1, 1, 1, 0)


def test_origin_to_ccd_uses_the_xoffset_keys():
    header = fits.Header()
    header[f"HIERARCH {xoffset_key(3, 17)}"] = 1200
    origin = pack_origin([3, 3], [17, 17], [1201, 1275], [10, 4000], [1200, 1200])
    ifu, slice_, x, y = origin_to_ccd(origin, header)
    assert list(x) == [1201, 1275] and list(y) == [10, 4000] and set(ifu) == {3} and set(slice_) == {17}
    with pytest.raises(RecipeError, match="XOFFSET"):
        origin_to_ccd(pack_origin(4, 1, 5, 5, 0), header)


def _table(n=1000, seed=0) -> PixTable:
    rng = np.random.default_rng(seed)
    ifu, slice_, x, y, xoffset = _random_origins(rng, n)
    header = fits.Header()
    header["HIERARCH ESO INS MODE"] = "WFM-NOAO-N"
    set_wcs_state(header, WCS_POSITIONED, (150.0, 2.0))
    return make_pixtable(
        {
            "xpos": rng.normal(0, 1e-3, n),
            "ypos": rng.normal(0, 1e-3, n),
            "lambda": rng.uniform(4750, 9350, n),
            "data": rng.normal(100, 10, n),
            "dq": rng.integers(0, 2, n) << 5,
            "stat": rng.uniform(1, 2, n),
            "origin": pack_origin(ifu, slice_, x, y, xoffset),
        },
        header,
        xpos="deg",
        ypos="deg",
    )


@pytest.mark.parametrize("as_table", [False, True])
def test_write_read_round_trip_both_layouts(tmp_path, as_table):
    pt = _table()
    path = pt.write(tmp_path / "PIXTABLE_REDUCED.fits", as_table=as_table)
    with fits.open(path) as hdul:
        if as_table:
            assert isinstance(hdul[1], fits.BinTableHDU)
        else:
            # the DRS layout: one (1 x nrows) image extension per column
            assert [h.header["EXTNAME"] for h in hdul[1:]] == ["xpos", "ypos", "lambda", "data", "dq", "stat", "origin"]
            assert hdul["xpos"].header["NAXIS1"] == 1 and hdul["xpos"].header["NAXIS2"] == pt.nrows
            assert hdul["origin"].data.dtype.kind == "i" and hdul["xpos"].header["BUNIT"] == "deg"
            assert hdul[0].header[pkey("LIMITS", "IFU", "HIGH")] == int(unpack_origin(pt.origin)[0].max())
    back = PixTable.read(path)
    for name in ("xpos", "ypos", "lambda", "data", "dq", "stat", "origin"):
        assert back.columns[name].dtype == pt.columns[name].dtype
        np.testing.assert_array_equal(back.columns[name], pt.columns[name])
    assert back.weight is None
    assert back.wcs_state == WCS_POSITIONED and back.reference() == (150.0, 2.0)


def test_weight_column_and_flat_field_extension_survive(tmp_path):
    from astropy.table import Table

    pt = _table(50)
    pt.columns["weight"] = np.linspace(0.5, 1.5, 50).astype(np.float32)
    pt.flat_field = Table({"lambda": np.array([5000.0, 6000.0]), "data": np.array([1.0, 1.1])})
    back = PixTable.read(pt.write(tmp_path / "pt.fits"))
    np.testing.assert_array_equal(back.weight, pt.weight)
    assert list(back.flat_field["data"]) == [1.0, 1.1]


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        PixTable.read(tmp_path / "missing.fits")
    bad = tmp_path / "not_a_pixtable.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2)), name="DATA")]).writeto(bad)
    with pytest.raises(RecipeError, match="not_a_pixtable.fits"):
        PixTable.read(bad)
    pt = _table(10)
    path = pt.write(tmp_path / "pt.fits")
    with fits.open(path) as hdul:
        fits.HDUList([h for h in hdul if h.header.get("EXTNAME") != "stat"]).writeto(tmp_path / "nostat.fits")
    with pytest.raises(RecipeError, match="nostat.fits.*stat"):
        PixTable.read(tmp_path / "nostat.fits")


def test_cut_lambda_and_limits():
    pt = _table(2000)
    cut = pt.cut_lambda(6000, 7000)
    assert cut.lam.min() >= 6000 and cut.lam.max() <= 7000 and cut.nrows < pt.nrows
    assert cut.header[pkey("LIMITS", "LAMBDA", "LOW")] == pytest.approx(float(cut.lam.min()))


def test_projected_coordinates_round_trip_and_match_astropy_tan():
    from astropy.wcs import WCS

    rng = np.random.default_rng(5)
    ra0, dec0 = 150.0, -30.0
    ra = ra0 + rng.uniform(-0.01, 0.01, 500)
    dec = dec0 + rng.uniform(-0.01, 0.01, 500)
    phi, tm = celestial_to_native(ra, dec, ra0, dec0)
    back_ra, back_dec = native_to_celestial(phi, tm, ra0, dec0)
    np.testing.assert_allclose(back_ra, ra, atol=1e-11)
    np.testing.assert_allclose(back_dec, dec, atol=1e-11)
    # the TAN projection plane of FITS WCS: x = R sin(phi), y = -R cos(phi), R = cot(theta)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [1.0, 1.0]  # 0-based pixel = intermediate coordinate
    w.wcs.cdelt = [1.0, 1.0]
    x, y = w.wcs_world2pix(ra, dec, 0)
    cot_theta = -np.tan(tm)  # θ = tm + π/2
    np.testing.assert_allclose(np.rad2deg(np.sin(phi) * cot_theta), x, atol=1e-10, rtol=0)
    np.testing.assert_allclose(-np.rad2deg(np.cos(phi) * cot_theta), y, atol=1e-10, rtol=0)


def test_wcs_state_from_header_or_units():
    pt = _table(5)
    assert pt.wcs_state == WCS_POSITIONED
    del pt.header[pkey("WCS")]
    assert pt.wcs_state == WCS_POSITIONED  # from the deg unit
    pt.units = {"xpos": "rad"}
    assert pt.wcs_state == WCS_PROJECTED
    pt.units = {}
    assert pt.wcs_state == WCS_PIXEL
    with pytest.raises(RecipeError, match="pixel units"):
        pt.reference()


def test_mismatched_column_lengths_are_rejected():
    with pytest.raises(RecipeError, match="rows"):
        make_pixtable({c: np.zeros(3 if c != "data" else 4) for c in
                       ("xpos", "ypos", "lambda", "data", "dq", "stat", "origin")})  # fmt: skip


def test_inplace_cut_and_consuming_concatenation_keep_the_rows():
    a, b = _table(300, seed=1), _table(200, seed=2)
    expected = np.concatenate([a.lam[(a.lam >= 6000) & (a.lam <= 8000)], b.lam])
    a.cut_lambda(6000, 8000, inplace=True)
    assert a.lam.min() >= 6000 and a.lam.max() <= 8000
    both = PixTable.concatenate([a, b], consume=True)
    np.testing.assert_array_equal(both.lam, expected)
    assert a.nrows == 0 and b.nrows == 0  # the inputs were emptied column by column
    # ... and their buffers released (an empty view would keep the whole column alive)
    assert all(col.base is None and col.nbytes == 0 for t in (a, b) for col in t.columns.values())
    with pytest.raises(RecipeError, match="mix coordinate states"):
        c = _table(5)
        c.header[pkey("WCS")] = "projected (intermediate)"
        PixTable.concatenate([_table(5), c])
