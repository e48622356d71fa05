"""The PyTorch peer: the same U-Net training step in eager PyTorch, on the CPU.

The issue's table has PyTorch 2.13 eager as the fastest peer at base 16, so
the suite measures it in the same run when torch is installed (it is not a
project requirement: `pip install torch==2.13.0`, the CPU build, adds it).
Same layers as unet.unet (valid 3x3 conv + ReLU + batch norm twice per level,
2x2 max pool, 2x2 stride-2 up-conv, centre-crop and concat, 1x1 output conv),
the paper's He init, Adam and sigmoid cross-entropy from logits; NCHW, which
measured faster here than channels_last (6.7 s vs 7.2 s at base 64).
"""

import numpy as np

import unet

LEARNING_RATE = 1e-4


def build_model(depth=4, base_filters=64, num_outputs=1, in_channels=3):
    """A torch.nn.Module mapping float32 [N, C, in, in] to logits [N, outputs, out, out]."""
    import torch
    from torch import nn

    def conv(cin, cout, k):
        layer = nn.Conv2d(cin, cout, k)
        nn.init.normal_(layer.weight, std=(2.0 / (k * k * cin)) ** 0.5)
        nn.init.zeros_(layer.bias)
        return layer

    def double_conv(cin, cout):
        # PyTorch's momentum weighs the new batch: 1 - unet.BN_MOMENTUM.
        return nn.Sequential(
            conv(cin, cout, 3), nn.ReLU(),
            nn.BatchNorm2d(cout, eps=unet.BN_EPSILON, momentum=1 - unet.BN_MOMENTUM),
            conv(cout, cout, 3), nn.ReLU(),
            nn.BatchNorm2d(cout, eps=unet.BN_EPSILON, momentum=1 - unet.BN_MOMENTUM))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [base_filters * 2**level for level in range(depth + 1)]
            self.contract = nn.ModuleList(
                double_conv(cin, cout) for cin, cout in zip([in_channels] + widths, widths))
            self.up = nn.ModuleList()
            self.expand = nn.ModuleList()
            for level in reversed(range(depth)):
                up = nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
                nn.init.normal_(up.weight, std=(2.0 / (4 * widths[level + 1])) ** 0.5)
                nn.init.zeros_(up.bias)
                self.up.append(up)
                self.expand.append(double_conv(2 * widths[level], widths[level]))
            self.output = conv(base_filters, num_outputs, 1)

        def forward(self, x):
            skips = []
            for level, block in enumerate(self.contract):
                x = block(nn.functional.max_pool2d(x, 2) if level else x)
                skips.append(x)
            skips.pop()  # the bottom has no skip connection
            for up, block in zip(self.up, self.expand):
                x = up(x)
                skip = skips.pop()
                dh, dw = (skip.shape[2] - x.shape[2]) // 2, (skip.shape[3] - x.shape[3]) // 2
                skip = skip[:, :, dh:dh + x.shape[2], dw:dw + x.shape[3]]
                x = block(torch.cat([skip, x], 1))
            return self.output(x)

    return UNet()


def trainable_parameter_count(model):
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def train_step_fn(input_size, depth=4, base_filters=64, batch=1, num_outputs=1, seed=0):
    """(step, model): step() runs one Adam step on a fixed random batch, returns the loss."""
    import torch

    torch.manual_seed(seed)
    model = build_model(depth, base_filters, num_outputs)
    optimizer = torch.optim.Adam(model.parameters(), LEARNING_RATE)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(seed)
    out = unet.output_size(input_size, depth)  # ValueError for an invalid size
    images = torch.from_numpy(rng.random([batch, 3, input_size, input_size], dtype=np.float32))
    labels = torch.from_numpy(
        (rng.random([batch, num_outputs, out, out]) < 0.3).astype(np.float32))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return float(loss.item())

    return step, model
