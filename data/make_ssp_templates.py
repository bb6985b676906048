"""Derive the compact SSP template file data/ssp_templates.fits from the original model files.

Run once from the repository root (the result is committed, so a fresh clone needs nothing else):

    python data/make_ssp_templates.py --src ../shared/data/ssp --out data/ssp_templates.fits

MaStar SSP v1.0 spectra (Maraston et al. 2020) are normalised per model, not per unit stellar mass, so
their shapes are rescaled by the BC03 luminosity per unit mass at 5400-5600 Å of the nearest BC03
metallicity, interpolated in log(age). That keeps MaStar's empirical spectra while letting the mock survey
mix populations by stellar mass. BC03 (Bruzual & Charlot 2003, MPA-JHU subset) is stored as it is.
"""
import argparse
import glob
import os
import re

import numpy as np
from astropy.io import fits

CITATION_MASTAR = "Maraston C. et al. 2020, MNRAS 496, 2962 (MaStar SSP v1.0, Salpeter IMF)"
CITATION_BC03 = "Bruzual G. & Charlot S. 2003, MNRAS 344, 1000 (MPA-JHU subset, K. Westfall / C. Tremonti)"
Z_SUN = 0.02


def read_mastar(src):
    files = sorted(glob.glob(os.path.join(src, "mastar_ssp_v1.0", "MaStar-SSP-A*-Z*.fits.gz")))
    params = [re.search(r"A(\d+\.\d+)-Z([+-]\d+\.\d+)", f).groups() for f in files]
    ages = sorted({float(a) for a, _ in params})
    logz = sorted({float(z) for _, z in params})
    header = fits.getheader(files[0])
    wave = 10 ** (header["CRVAL1"] + header["CDELT1"] * np.arange(header["NAXIS1"]))
    flux = np.zeros((len(ages), len(logz), wave.size))
    for f, (a, z) in zip(files, params):
        flux[ages.index(float(a)), logz.index(float(z))] = fits.getdata(f)
    return wave, np.array(ages), np.array(logz), flux


def read_bc03(src):
    files = sorted(glob.glob(os.path.join(src, "bc03_mpajhu", "BC03_z*_a*.fits")))
    headers = [fits.getheader(f) for f in files]
    ages = sorted({h["AGE"] for h in headers})
    metal = sorted({h["Z"] for h in headers})
    h0 = headers[0]
    wave = h0["CRVAL1"] + h0["CDELT1"] * (np.arange(h0["NAXIS1"]) + 1 - h0["CRPIX1"])
    flux = np.zeros((len(ages), len(metal), wave.size))
    for f, h in zip(files, headers):
        flux[ages.index(h["AGE"]), metal.index(h["Z"])] = fits.getdata(f)
    return wave, np.array(ages), np.log10(np.array(metal) / Z_SUN), flux


def luminosity_per_mass(bc_wave, bc_ages, bc_logz, bc_flux, ages, logz):
    """BC03 mean flux per unit mass at 5400-5600 Å, at the MaStar (age, log Z) grid."""
    window = (bc_wave > 5400) & (bc_wave < 5600)
    lum = np.log10(bc_flux[:, :, window].mean(axis=2))  # [age, Z]
    out = np.zeros((ages.size, logz.size))
    for j, z in enumerate(logz):
        k = np.argmin(np.abs(bc_logz - z))
        out[:, j] = 10 ** np.interp(np.log10(ages), np.log10(bc_ages), lum[:, k])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default="../shared/data/ssp")
    parser.add_argument("--out", default="data/ssp_templates.fits")
    args = parser.parse_args()

    m_wave, m_ages, m_logz, m_flux = read_mastar(args.src)
    b_wave, b_ages, b_logz, b_flux = read_bc03(args.src)
    window = (m_wave > 5400) & (m_wave < 5600)
    shape = m_flux / m_flux[:, :, window].mean(axis=2, keepdims=True)
    m_flux = shape * luminosity_per_mass(b_wave, b_ages, b_logz, b_flux, m_ages, m_logz)[:, :, None]

    primary = fits.PrimaryHDU()
    primary.header["COMMENT"] = "Compact SSP templates for the galaxy explorer mock survey."
    primary.header["COMMENT"] = "Flux per unit stellar mass (BC03 units, Lsun/A/Msun); wavelengths vacuum-like A."
    primary.header["CITE1"] = CITATION_MASTAR
    primary.header["CITE2"] = CITATION_BC03
    hdus = [primary]
    for name, wave, ages, logz, flux, cite in (
        ("MASTAR", m_wave, m_ages, m_logz, m_flux, CITATION_MASTAR),
        ("BC03", b_wave, b_ages, b_logz, b_flux, CITATION_BC03),
    ):
        hdu = fits.ImageHDU(flux.astype(np.float32), name=f"{name}_FLUX")
        hdu.header["CITATION"] = cite
        hdu.header["BUNIT"] = "Lsun/Angstrom/Msun"
        hdus += [hdu, fits.ImageHDU(wave, name=f"{name}_WAVE"),
                 fits.ImageHDU(ages, name=f"{name}_AGE_GYR"), fits.ImageHDU(logz, name=f"{name}_LOGZ")]
    fits.HDUList(hdus).writeto(args.out, overwrite=True)
    print(f"wrote {args.out}: MaStar {m_flux.shape}, BC03 {b_flux.shape}")


if __name__ == "__main__":
    main()
