"""Prose of docs/bundle-schema.md around the tables that precompute.schema generates from its declarations."""

INTRO = """
A **bundle** is one folder (default `data/bundles/<name>/`) written by `python -m precompute prepare` (core
files) or `python -m precompute build` (core + model sections) and read by the dashboard (`explorer/`). It is the
only contract between the two. Every file is declared once in `precompute/schema.py` (path, kind, dtype, symbolic
shape, unit, meaning, section, invariants); `precompute/bundle.py` writes it atomically (temporary sibling folder,
then rename) and reads it through those declarations. `python -m precompute validate BUNDLE` checks a bundle
against the schema and prints one line per problem (exit code 1 when there is any).

Conventions: `g` indexes galaxies (row order of `galaxies.parquet`), `s` indexes binned spectra (row order of
`bins.parquet`), `K = rows × cols` SOM nodes, node `k = row * cols + col`. Wavelengths are rest-frame vacuum Å.
Flux of prepared spectra is dimensionless: divided by the mean flux in `config.prepare.norm_window`. Shapes name
their dimensions: `n_galaxies`, `n_bins`, `n_wave` (rows of the tables, length of the grid), `S` (image size),
`rows × cols` (DESOM-1), `rows2 × cols2 = K2` (DESOM-2), `rows3 × cols3 = K3` (the seed-002 MiniSom map), `D` (an embedding's width), `k` (neighbours kept);
`validate` resolves them across files.

Storage: spectra and images are plain `.npy` files (any tool reads them), written once by the build's driver galaxy by
galaxy from the preparation shards and read in chunks of rows by the build's later stages with `pread`
(`precompute/rows.py`), so no process holds a survey's spectra: a memory map would do the same I/O, but every page a
pass touches counts in the process's resident memory (4 GB for a 2,560-galaxy survey's flux). `assign` and the
dashboard memory-map them (`numpy.load(mmap_mode="r")`) and touch only the rows they show. A chunked format (Zarr)
would let workers write the bundle's arrays in parallel; it has not been benchmarked against this yet.
"""

SECTION_TITLES = {
    "desom1": "spectral map of binned spectra (DESOM-1, seed 001)",
    "fingerprints": "galaxies as histograms over DESOM-1 nodes (seed 001)",
    "desom2": "map of fingerprints (DESOM-2)",
    "sed_map": "k-means and MiniSom map of single spectra (seed 002)",
    "embeddings": "galaxy embeddings and their projections",
    "contrastive": "the contrastive cube embedding's model (seed 000)",
    "anomaly": "emission-line anomaly autoencoder (seed 003)",
    "image_vae": "convolutional VAE of galaxy images (seed 004)",
}

# (text before the file table, text after it), per section.
SECTION_TEXT = {
    "optional": """
Each section is listed in `manifest.sections`; its files and the table columns it adds are declared in
`precompute/schema.py` and checked on reading (presence) and by `validate` (everything).
""",
    "desom1": ("""
Trained on the bins of the `train` galaxies (a random sample of `config.desom1.max_train_spectra`: "auto" = every one
on a GPU, 6,000 on a CPU; more than 20,000 are streamed from `spectra/flux.npy` a mini-batch at a time);
every bin is then placed on the frozen map. Architecture: 4 conv blocks (conv, max-pool 2, leaky ReLU) to a
latent of `latent_dim` (scaled to unit mean square by one shared factor), mirrored decoder, plus a linear path
started at the PCA of the training spectra; loss = masked MSE + γ · SOM loss (per latent dimension and unit
neighbourhood weight). Bad pixels are replaced by the training mean spectrum before encoding.
""", """
Node statistics (`node_properties.parquet`, `node_histograms.npz`) come from `precompute.node_statistics`, the one
definition the dashboard uses too. Properties are every numeric or boolean column of `bins.parquet` (except
`galaxy_index`, `bin_id` and the `desom*` columns) under their own name, and every numeric or boolean column of
`galaxies.parquet` joined to its bins as `galaxy.<column>` (e.g. `galaxy.log_mstar`, `galaxy.quenched`).

Adds to `bins.parquet`: `desom1_node`, `desom1_qe`. Metrics `desom1`: `topographic_error`, `quantization_error`
(training bins), `val_topographic_error`, `val_quantization_error` (held-out galaxies' bins), `val_mse_autoencoder`,
`val_mse_pca`, `pca_components`, `improvement_over_pca` (1 − AE/PCA; masked MSE on the held-out galaxies' bins, a random
6,000 of them in a larger survey; PCA
with as many components as the latent, fitted on the training spectra (6,000 of them at most) with bad pixels filled by the training
mean), `smoothness` (per bin property: Pearson r between node medians and their neighbours' mean), `epochs`,
`best_epoch`, `seconds`, `train_spectra`, `val_spectra`.

Latent width: seed 001 uses 256. On held-out mock spectra (60-galaxy survey, 6,000 training spectra) PCA-256
already fits down to the noise (masked MSE 0.00205, noise variance ≈ 0.0019) and the autoencoder is only 1 % better
there, while at the default 16 it is 15–17 % better than PCA-16 (0.0025 vs 0.0030), uses more nodes on held-out
spectra and encodes faster; so the build uses 16 (`config.desom1.latent_dim`; set 256 for the seed-001
architecture).
"""),
    "desom2": ("""
Trained on the `train` galaxies' fingerprints; `config.desom2.backend` is `desom` (2-D conv autoencoder + SOM, as
DESOM-1) or `minisom` (classic SOM on the flattened fingerprints). Prototypes are `[K2, rows, cols]`: fingerprints
over the DESOM-1 grid.
""", """
Adds to `galaxies.parquet`: `desom2_node`. Metrics `desom2`: `topographic_error`, `quantization_error`, `epochs`,
`backend`, `seconds`, and with a `morphology` column `morphology_distance_ratio` (mean grid distance between
galaxies of the same morphology over that between all galaxies: < 1 when morphologies gather on the map).
"""),
    "sed_map": ("""
Built instead of `fingerprints` and `desom2` when every object of the survey is one spectrum (SDSS spec files,
spectra-set FITS, the mock SED library with `mock.format = "sed"`): each object is then one row of
`galaxies.parquet` with one binned spectrum. DESOM-1 maps the spectra as above; k-means
(`config.sed_map.kmeans_k`, 6 in seed 002) and a classic MiniSom map (`minisom_rows × minisom_cols`, 10 × 10)
group and order their latent codes, both fitted on the `train` objects. The latent codes are the embedding
`desom1_latent`. Cube and image models (`contrastive`, `anomaly`, `image_vae`) are not run: there is no cube.
""", """
Adds to `galaxies.parquet`: `sed_kmeans`, `sed_node`. Metrics `sed_map`: `seconds`,
`minisom_quantization_error`, `minisom_topographic_error` (training objects), and where the table carries the
truth, the purity of each grouping (share of objects whose truth is their group's most common one) against
star-forming vs quenched (log sSFR < −11) and the star-formation history kind (`sfh`): `kmeans_purity_quenched`,
`kmeans_purity_sfh`, `minisom_purity_quenched`, `minisom_purity_sfh`.
"""),
    "embeddings": ("""
A built bundle of cubes always has `fingerprint` (the flattened `fingerprints/fingerprints.npy`, Euclidean); the models
named in `config.embedding_models` (all three by default) add `contrastive` (512-d, cosine), `anomaly` and
`image_vae` (Euclidean) with their sections below. The files below exist for every name `E` in the index
(`{embedding}` = `E`). A bundle of single spectra (section `sed_map`) has `desom1_latent` only.
""", """
Metrics `embeddings.E` (figures against the known properties, where the galaxy table has them):
`knn_r2_log_mstar`, `knn_r2_log_age_lw`, `knn_r2_ew_halpha` (R² of the mean of the 10 nearest training galaxies
for the `val` galaxies), `kmeans_k2_quenched_accuracy`, `ks_p_train_vs_val` and `ks_p_quenched_vs_star_forming`
(two-sample KS p-values of the seed-000 typicality: the distance to the 10th nearest training galaxy,
`precompute.compare.typicality`), `projection_seconds`. `python -m precompute compare` and the dashboard's
population comparison use the same function on `knn_distance.npy` (seed 000 Figs. 8–9).
"""),
    "contrastive": ("", """
The cube maps are `[30, S, S]` (`S = config.contrastive.map_size`): the 29 PCA coefficients of each spaxel's
normalised spectrum (bad pixels replaced by the PCA mean) and its luminosity density in the normalisation window
(erg s⁻¹ Å⁻¹ / 10³⁶, from the spaxel's mean flux and the luminosity distance of its redshift, Planck 2018),
centred on the IFU centre, zero-padded; a cube larger than `S` is binned by the smallest integer factor that fits
(coefficients averaged, luminosity summed). Training also uses each spaxel's noise (1 / S/N per pixel), so that the
noise augmentation brings every spaxel to one S/N drawn in 1–10 (seed 000); the other augmentations are flips and
90° rotations, translation, 1σ blur, 2×2–5×5 binning, masked foreground stars and a luminosity scaling of up to
±`augment.luminosity_dex`. The vector of a galaxy is the ReLU output of the first dense layer after flattening,
averaged over the map's 8 orientations, from the network whose weights are the exponential moving average of the
trained ones (`config.contrastive.ema_decay` per step) at the epoch of lowest validation NT-Xent loss. Metrics
`contrastive`: `seconds`, `epochs`, `best_epoch`, `n_parameters`, `pca_spectra`, `pca_explained_variance`,
`augmented_retrieval_val` and `augmented_retrieval_within_val` (share of 5 augmented copies of each `val` galaxy
whose nearest galaxy, among all galaxies / among the `val` ones, is the galaxy itself),
`baseline_cube_pca_knn_r2_<property>` (the same k-NN R² from a 32-component PCA of the flattened cube maps).
"""),
    "anomaly": ("""
Also writes `embeddings/anomaly/*` (the latent vectors, `config.anomaly.latent_dim`-d) and adds the galaxy column
`anomaly_score`, high = unusual, and its parts (older bundles: `anomaly_score` is `anomaly_convlstm` alone):
- `anomaly_convlstm`: the mean absolute reconstruction error over the voxels of the galaxy's emission-line cube
  where the data or the reconstruction show a detection (|S/N| ≥ `config.anomaly.detection_snr`), in the
  network's units asinh(S/N / `config.anomaly.snr_softening`); 0 for a galaxy with no detection;
- `anomaly_nucleus`: the same error over the spaxels within 2 spaxels of the crop centre (`spaxel_residuals`);
  an AGN is a nuclear point source of unusual line ratios;
- `asymmetry`: the rotational asymmetry A = (Σ|I − I₁₈₀| − sky term) / Σ|I| of the summed g + r + i image within
  1.5 Petrosian radii, about the half-pixel centre that minimises it (Conselice 2003; `precompute.morphology`),
  with the brightest compact peak of the residual I − I₁₈₀ and its mirror masked (as asymmetries are measured
  with contaminating stars masked): tidal arcs and lopsided discs raise it, an unflagged foreground star much less
  than unmasked;
- `fingerprint_typicality` (when the build made fingerprints): the distance to the 10th nearest training galaxy in
  the fingerprint embedding, `precompute.compare.typicality`: galaxies whose binned spectra fill the DESOM-1 map
  unlike any other (extreme emission-line dwarfs);
- `compact_asymmetry`, not a part: the asymmetry the masking removed (unmasked A − A), high for a foreground star
  or a second nucleus, near 0 for tidal light; the relevance model's space holds it (`precompute.rank`);
- `anomaly_score` = Σ over the parts of −log10 p, p the part's empirical upper-tail probability (the share of
  galaxies with a value at least as high): Fisher's method, high when a galaxy is far out in one part or fairly
  far out in several; `anomaly_driver` names the part of smallest p.
""", """
The emission-line cube of a galaxy is `[19 lines, n_bins, crop, crop]`: the normalised spectrum minus the mean of
the line-free side-band pixels within 40 pixels, in the `n_bins` pixels around each line, for the crop centred on
the IFU centre. Metrics `anomaly`: `seconds` (all parts), `convlstm_seconds`, `final_loss`, `parts` (the columns
combined), `auc_agn`, `auc_disturbed`, `auc_extreme_emission` (ROC AUC of `anomaly_score` for the mock truth
flags, when present) and `auc_<kind>_<part>` (the same for each part alone).
"""),
    "image_vae": ("""
Also writes `embeddings/image_vae/*` (latent means, `config.image_vae.latent_dim`-d).
""", """
Input: `images/gri.npy` band `config.image_vae.band`, log10(flux + sky noise) scaled to 0–1 by the training
galaxies' 1st and 99.9th percentiles. Metrics `image_vae`: `seconds`, `final_loss`.
"""),
}
