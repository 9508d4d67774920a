"""Networks the families are built from, with their specs: MLPs, convolutional encoders and decoders
(blocks.py), the GAN's generators and discriminators (gan.py)."""
