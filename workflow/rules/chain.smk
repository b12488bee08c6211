# The full chain (Gaur et al. + Min et al.): features of the Siamese-trained encoder, their layer search, gaur_hpf.
