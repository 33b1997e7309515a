"""The convolutions the bench times, each as in the network it comes from."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Layer:
    """One benchmarked 3x3-style convolution: its shape, stride, padding and bias, and the
    batch of a full run and of a quick one."""

    name: str
    description: str
    in_channels: int
    out_channels: int
    kernel: int
    size: int  # input height = width
    batch: int  # batch of the full run
    quick_batch: int  # batch of --quick
    stride: int = 1
    padding: int = 1
    bias: bool = True

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        """(batch, in_channels, size, size)."""
        return (batch, self.in_channels, self.size, self.size)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """(out_channels, in_channels, kernel, kernel)."""
        return (self.out_channels, self.in_channels, self.kernel, self.kernel)

    @property
    def out_size(self) -> int:
        """Output height = width."""
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    def forward_flops(self, batch: int) -> int:
        """Multiply-adds x 2 of the dense forward; grad-input and grad-weight cost the same."""
        macs = batch * self.out_channels * self.out_size**2 * self.in_channels * self.kernel**2
        return 2 * macs

    def to_dict(self, batch: int) -> dict:
        """The layer as the bench JSON's ``layers`` entry: its fields, the batch run and the forward FLOPs."""
        return {**asdict(self), "batch": batch, "forward_flops": self.forward_flops(batch)}


LAYERS: dict[str, Layer] = {
    layer.name: layer
    for layer in (
        Layer("paper", "paper's 6-layer CNN, last conv (64->128 3x3 on 7x7)",
              64, 128, 3, 7, batch=128, quick_batch=32),
        Layer("vgg16", "VGG-16 conv5_3 (512->512 3x3 on 14x14)",
              512, 512, 3, 14, batch=8, quick_batch=2),
        Layer("vgg16_conv3", "VGG-16 conv3_3 (256->256 3x3 on 28x28)",
              256, 256, 3, 28, batch=8, quick_batch=2),
        Layer("resnet18", "ResNet-18 layer4 conv (512->512 3x3 on 7x7, no bias)",
              512, 512, 3, 7, batch=16, quick_batch=4, bias=False),
    )
}

QUICK_LAYERS = ("paper",)  # the layers of a quick run
