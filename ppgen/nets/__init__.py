"""Network blocks the families are built from: MLPs, convolutional encoders and decoders, their specs."""
