"""Autoregressive families over pixels (PixelCNN, gated PixelCNN, PixelRNN) and their masked convolutions."""
