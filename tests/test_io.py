"""Raw reading (uint16 via BZERO/XOR) and merged product writing/reading."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from calib_helpers import SMALL, ext_header, make_raw_image, primary_header, write_raw

from recipes.base import RecipeError
from recipes.io import (
    CcdImage,
    ProductWriter,
    list_ifus,
    read_badpix_table,
    read_image_product,
    read_raw_ifu,
    read_table_product,
    write_ifu_images,
)
from recipes.provenance import product_header, recorded_params


@pytest.fixture
def raw_file(tmp_path):
    rng = np.random.default_rng(0)
    images = {}
    for ifu in (3, 7):
        header = ext_header(SMALL, ifu)
        image = make_raw_image(SMALL, header, rng)
        image[0, 0], image[1, 1] = 0, 65535  # the extremes of uint16 survive
        images[ifu] = (image, header)
    return write_raw(tmp_path / "MUSE.raw.fits", primary_header(), images), images


def test_raw_roundtrip_uint16(raw_file):
    path, images = raw_file
    assert list_ifus(path) == [3, 7]
    with fits.open(path) as hdul:
        assert hdul["CHAN07"].header["BITPIX"] == 16 and hdul["CHAN07"].header["BZERO"] == 32768
    image, header = read_raw_ifu(path, 7)
    assert image.dtype == np.uint16 and image.dtype.isnative
    np.testing.assert_array_equal(image, images[7][0])
    assert header["EXTNAME"] == "CHAN07"
    # identical to astropy's scaled read
    np.testing.assert_array_equal(image, fits.getdata(path, "CHAN07"))


def test_raw_errors_name_the_file(raw_file, tmp_path):
    path, _ = raw_file
    with pytest.raises(RecipeError, match=r"MUSE.raw.fits: no extension CHAN01"):
        read_raw_ifu(path, 1)
    with pytest.raises(RecipeError, match="does not exist"):
        read_raw_ifu(tmp_path / "gone.fits", 3)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(path.read_bytes()[: -2880 * 4])
    with pytest.raises(RecipeError, match="truncated.fits"):
        read_raw_ifu(truncated, 7)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a fits file at all" * 200)
    with pytest.raises(RecipeError, match="junk.fits"):
        read_raw_ifu(junk, 3)


def test_product_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    header = product_header("MASTER_BIAS", "muse_bias", {"overscan": "vpoly", "merge": False, "nlow": 1},
                            [(tmp_path / "a.fits", "BIAS")], [(tmp_path / "bp.fits", "BADPIX_TABLE")],
                            template=primary_header())
    path = tmp_path / "MASTER_BIAS.fits"
    writer = ProductWriter(path, header)
    images = {}
    for ifu in (2, 5):
        ext = fits.Header()
        ext["HIERARCH ESO QC BIAS MASTER1 RON"] = 2.5 + ifu
        img = CcdImage(rng.normal(size=(6, 5)).astype(np.float32), rng.integers(0, 9, (6, 5)).astype(np.int32),
                       rng.random((6, 5)).astype(np.float32), ext)
        writer.add_image(ifu, img, "adu", "(adu)**2")
        images[ifu] = img
    writer.add_table(9, Table({"xpos": [1, 2], "ypos": [3, 4], "status": [256, 512], "value": [0.0, 1.0]}))
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
        assert names == ["PRIMARY", "CHAN02.DATA", "CHAN02.DQ", "CHAN02.STAT", "CHAN05.DATA", "CHAN05.DQ",
                         "CHAN05.STAT", "CHAN09"]
        prim = hdul[0].header
        assert prim["ESO PRO CATG"] == "MASTER_BIAS" and prim["ESO PRO REC1 ID"] == "muse_bias"
        assert prim["ESO PRO REC1 PIPE ID"].startswith("musered/")
        assert prim["ESO PRO REC1 RAW1 NAME"] == "a.fits" and prim["ESO PRO REC1 CAL1 CATG"] == "BADPIX_TABLE"
        assert prim["ESO INS MODE"] == "WFM-NOAO-N"
        assert hdul["CHAN02.DQ"].header["HDUCLAS2"] == "QUALITY"
        assert hdul["CHAN02.STAT"].header["BUNIT"] == "(adu)**2"
        assert hdul["CHAN02.DATA"].data.dtype.name == "float32" or hdul["CHAN02.DATA"].header["BITPIX"] == -32
        assert hdul["CHAN02.DQ"].header["BITPIX"] == 32
    assert recorded_params(fits.getheader(path)) == {"overscan": "vpoly", "merge": "false", "nlow": "1"}
    got = read_image_product(path, 5)
    np.testing.assert_array_equal(got.data, images[5].data)
    np.testing.assert_array_equal(got.dq, images[5].dq)
    np.testing.assert_array_equal(got.stat, images[5].stat)
    assert got.header["ESO QC BIAS MASTER1 RON"] == 7.5
    assert list_ifus(path) == [2, 5, 9]
    with pytest.raises(RecipeError, match="no image extension for IFU 3"):
        read_image_product(path, 3)
    table, _ = read_table_product(path, 9)
    assert list(table["status"]) == [256, 512]
    xpos, ypos, status = read_badpix_table(path, 9)
    assert list(xpos) == [1, 2] and list(status) == [256, 512]
    assert read_badpix_table(path, 1)[0].size == 0


def test_single_ifu_drs_form_is_read(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    hdus = fits.HDUList([fits.PrimaryHDU(header=fits.Header([("EXTNAME", "CHAN04")])),
                         fits.ImageHDU(data, name="DATA"), fits.ImageHDU(np.zeros((3, 4), np.int32), name="DQ"),
                         fits.ImageHDU(np.ones((3, 4), np.float32), name="STAT")])
    hdus.writeto(tmp_path / "MASTER_BIAS-04.fits")
    got = read_image_product(tmp_path / "MASTER_BIAS-04.fits", 4)
    np.testing.assert_array_equal(got.data, data)
    assert got.stat.sum() == 12


def test_prefetch_is_a_harmless_hint(raw_file, tmp_path):
    from recipes.io import prefetch_raw_ifu

    path, images = raw_file
    prefetch_raw_ifu(path, 7)
    prefetch_raw_ifu(path, 1)  # no such extension: ignored
    prefetch_raw_ifu(tmp_path / "missing.fits", 3)  # no such file: ignored
    np.testing.assert_array_equal(read_raw_ifu(path, 7)[0], images[7][0])


def test_write_ifu_images_streams_ifus_and_collects_qc(raw_file, tmp_path):
    raw, _ = raw_file
    built = []

    def build(ifu):
        built.append(ifu)
        ext = fits.Header()
        ext["HIERARCH ESO QC DARK MASTER MEDIAN"] = float(ifu)
        ext["HIERARCH ESO DRS MUSE OVSC1 MEAN"] = 1.0  # not a QC key: stays out of the summary
        shape = (4, 3)
        return CcdImage(np.full(shape, ifu, np.float32), np.zeros(shape, np.int32), np.ones(shape, np.float32), ext)

    path = tmp_path / "MASTER_DARK.fits"
    qc = write_ifu_images(path, primary_header(), [3, 7], [raw], build, "count", "(count)**2")
    assert built == [3, 7]
    assert qc == {"CHAN03 QC DARK MASTER MEDIAN": 3.0, "CHAN07 QC DARK MASTER MEDIAN": 7.0}
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "CHAN03.DATA", "CHAN03.DQ", "CHAN03.STAT", "CHAN07.DATA",
                                          "CHAN07.DQ", "CHAN07.STAT"]  # fmt: skip
        assert hdul["CHAN07.DATA"].header["BUNIT"] == "count" and hdul["CHAN07.STAT"].header["BUNIT"] == "(count)**2"
        assert hdul["CHAN07.DATA"].data[0, 0] == 7.0


def test_write_ifu_images_passes_build_errors_on(raw_file, tmp_path):
    # the partial file is the runner's to discard (it gave the recipe a staging folder)
    raw, _ = raw_file

    def build(ifu):
        if ifu == 7:
            raise RecipeError("CHAN07: broken")
        return CcdImage(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int32), np.zeros((2, 2), np.float32),
                        fits.Header())  # fmt: skip

    path = tmp_path / "MASTER_BIAS.fits"
    with pytest.raises(RecipeError, match="CHAN07"):
        write_ifu_images(path, primary_header(), [3, 7], [raw], build, "adu", "(adu)**2")


def test_fit_comments_shortens_only_what_does_not_fit(tmp_path):
    import warnings

    from recipes.io import fit_comments, hkey

    header = fits.Header()
    header[hkey("ESO DRS MUSE PIXTABLE RVCORR")] = (-11.666258025346433, "[km/s] radial-velocity correction applied")
    header["EXPTIME"] = (600.0, "[s] exposure time")
    header.add_history("kept as it is")
    fit_comments(header)
    assert header.comments["EXPTIME"] == "[s] exposure time"
    assert header.comments["ESO DRS MUSE PIXTABLE RVCORR"].startswith("[km/s] radial")
    assert header["ESO DRS MUSE PIXTABLE RVCORR"] == -11.666258025346433
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # astropy would warn "Card is too long"
        fits.PrimaryHDU(header=header).writeto(tmp_path / "h.fits")
    assert all(len(card.image) == 80 for card in header.cards)


def _mixed_file(path):
    """A multi-extension file with every image encoding the index reader must decode."""
    rng = np.random.default_rng(3)
    u16 = rng.integers(0, 65536, (5, 7)).astype(np.uint16)
    u16[0, :2] = (0, 65535)
    scaled = fits.ImageHDU(rng.integers(-300, 300, (4, 6)).astype(np.int16), name="SCALED",
                           do_not_scale_image_data=True)  # fmt: skip
    scaled.header["BSCALE"], scaled.header["BZERO"] = 0.5, 10.0
    blank = rng.integers(-50, 50, (3, 3)).astype(np.int32)
    blank[1, 1] = -999
    blank_hdu = fits.ImageHDU(blank, name="BLANKED")
    blank_hdu.header["BLANK"] = -999
    hdus = fits.HDUList([
        fits.PrimaryHDU(header=fits.Header([("OBJECT", "it's quoted", "a ' in the comment")])),
        fits.ImageHDU(rng.normal(size=(6, 5)).astype(np.float32), name="F32"),
        fits.ImageHDU(rng.normal(size=(2, 3)), name="F64"),
        fits.ImageHDU(u16, name="U16"),
        fits.BinTableHDU(Table({"a": np.arange(4), "s": ["x", "yy", "zzz", "w"]}), name="TAB"),
        scaled,
        fits.ImageHDU(rng.integers(-9, 9, (4, 4)).astype(np.int32), name="I32"),
        blank_hdu,
    ])  # fmt: skip
    hdus.writeto(path)
    return path


def test_fits_index_matches_astropy(tmp_path):
    from recipes.io import fits_index, read_hdu_header, read_hdu_image

    path = _mixed_file(tmp_path / "mixed.fits")
    index = fits_index(path)
    with fits.open(path) as hdul:
        assert [h.name for h in index[1:]] == [h.name for h in hdul[1:]]
        for info, hdu in zip(index, hdul):
            assert read_hdu_header(path, info) == hdu.header
            if info.xtension == "BINTABLE" or info.index == 0:
                continue
            assert info.shape == hdu.data.shape
            for dtype in (np.float32, np.float64):
                got = read_hdu_image(path, info, dtype)
                assert got.dtype == dtype and got.dtype.isnative
                np.testing.assert_array_equal(got, np.asarray(hdu.data, dtype=dtype), err_msg=info.name)
    assert read_hdu_header(path, index[0])["OBJECT"] == "it's quoted"
    assert np.isnan(read_hdu_image(path, index[-1], np.float32)[1, 1])  # BLANK → NaN, as astropy
    assert read_hdu_image(path, index[3], np.uint16).max() == 65535  # BZERO=32768 storage
    same_type = read_hdu_image(path, index[6], np.int32)  # stored type = wanted type: swapped in place
    assert same_type.dtype == np.int32 and same_type.dtype.isnative
    np.testing.assert_array_equal(same_type, fits.getdata(path, "I32"))
    with pytest.raises(ValueError, match="not an uncompressed image"):
        read_hdu_image(path, index[4], np.float32)


def test_fits_index_is_cached_per_file_version(tmp_path):
    from recipes import io as rio

    path = tmp_path / "p.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2), np.float32), name="A")]).writeto(path)
    first = rio.fits_index(path)
    assert rio.fits_index(path) is first  # no second scan
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3), np.float32), name="B"),
                  fits.ImageHDU(np.ones((1, 1), np.float32), name="C")]).writeto(path, overwrite=True)  # fmt: skip
    assert [h.name for h in rio.fits_index(path)[1:]] == ["B", "C"]


def test_fits_index_errors_name_the_file(tmp_path):
    from recipes.io import fits_index

    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"X" * 2880 * 2)
    with pytest.raises(RecipeError, match="junk.fits: corrupt FITS structure"):
        fits_index(junk)
    good = _mixed_file(tmp_path / "mixed.fits")
    cut = tmp_path / "cut.fits"
    cut.write_bytes(good.read_bytes()[: 2880 * 3 + 100])
    with pytest.raises(RecipeError, match="cut.fits"):
        fits_index(cut)
    with pytest.raises(RecipeError, match="cut.fits"):
        read_image_product(cut, 1)


def test_image_product_truncated_data_names_the_file(tmp_path):
    path = tmp_path / "MASTER_FLAT.fits"
    writer = ProductWriter(path, primary_header())
    shape = (40, 30)
    writer.add_image(1, CcdImage(np.ones(shape, np.float32), np.zeros(shape, np.int32), np.ones(shape, np.float32),
                                 fits.Header()), "count", "(count)**2")  # fmt: skip
    raw = path.read_bytes()
    cut = tmp_path / "cut_flat.fits"
    cut.write_bytes(raw[: len(raw) - 2880])  # the STAT data end early
    with pytest.raises(RecipeError, match=r"cut_flat.fits"):
        read_image_product(cut, 1)


def test_prefetch_of_a_product_ifu_is_harmless(tmp_path):
    from recipes.io import prefetch_raw_ifu

    path = tmp_path / "MASTER_FLAT.fits"
    writer = ProductWriter(path, primary_header())
    image = CcdImage(np.full((3, 4), 2.0, np.float32), np.zeros((3, 4), np.int32), np.ones((3, 4), np.float32),
                     fits.Header())  # fmt: skip
    writer.add_image(2, image, "count", "(count)**2")
    prefetch_raw_ifu(path, 2)
    prefetch_raw_ifu(path, 5)  # no such IFU: ignored
    np.testing.assert_array_equal(read_image_product(path, 2).data, image.data)


def test_primary_header_is_read_by_the_block_reader(raw_file, tmp_path):
    """recipes.io.read_primary_header (astropy Header, comments kept) and the ingest's typed
    values come from the same header bytes (recipes.io.fitsblocks)."""
    from recipes.io import read_primary_header
    from recipes.io.fitsblocks import parse_cards, read_primary_bytes

    from musered.fitsheader import read_primary_values

    path, _ = raw_file
    header = read_primary_header(path)
    assert [c.image for c in header.cards] == [c.image for c in fits.getheader(path).cards]
    raw, length = read_primary_bytes(path)
    assert length % 2880 == 0 and parse_cards(raw) == read_primary_values(path)
    assert {k: header[k] for k in read_primary_values(path)} == read_primary_values(path)
    junk = tmp_path / "junk.fits"
    junk.write_text("<html>not fits</html>")
    with pytest.raises(RecipeError, match=r"junk.fits: cannot read primary header \(not a FITS file"):
        read_primary_header(junk)
