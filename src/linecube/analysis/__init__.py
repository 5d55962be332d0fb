"""What the models say about galaxies: anomaly scores (residual, latent, features),
diagnostics, probes, validation, embedding, neighbours, reranking, scoring new cubes."""
