"""Core: the machinery that trains a U-Net and runs it, shared by every command.

config      every training setting, its default, its one check, config.json
optim       the loss, the learning rate and the optimiser
pretrained  a Keras VGG16 weights file, or EfficientNet-Lite0's ImageNet state dict, read
            into the encoder
efficientnet  EfficientNet-Lite0's stages as the efficientnet-lite0 encoder's levels
rundir      the run directory: its paths, checkpoints, config.json and threshold.json
distribute  tf.distribute strategies and the per-replica training step
device      session settings: threads, XLA, precision, GPU memory growth
metrics     the confusion counts and every score derived from them
summaries   TensorBoard's windows image
tiling      overlap-tile inference shared by predict, evaluate and export
"""
