"""Parts of the ``conformer_diffusion`` family (``models/conformer_diffusion.py``): the EGNN
denoiser (``egnn``), the zero centre-of-mass DDPM (``diffusion``), Kabsch RMSD and COV / MAT
(``rmsd``) and the host figure (``plot.plot_conformers``)."""
