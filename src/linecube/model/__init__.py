"""The ConvLSTM2D autoencoders: architectures, layers, losses, the summary head, the
autoencoder, training orchestration and callbacks, the Keras backend, the model card."""
