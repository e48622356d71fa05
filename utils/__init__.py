"""Utilities every command uses and that know nothing of U-Nets.

cli      the error line and exit code of every command, shared argparse types
errors   reducing an error to one line, and atomic writes of files and directories
quiet    importing TensorFlow without its start-up noise
runlock  one training per run directory
torchfile  a PyTorch state dict file read without PyTorch (tensors only, no code)
"""
