"""The networks and what they need to run: GIFNet, TIM, the classical rules, weights, ONNX.

The lowest layer: it imports nothing else of the package but itself.
"""

MIN_SIZE = 8
"""The smallest image height and width the networks fuse. Defined once, here, where every
module can import it without a cycle (onnx imports tim, so tim cannot import onnx): GIFNet
and TIM refuse smaller inputs, the ONNX export declares it as the least symbolic size and the
tools refuse a smaller ``--size``, so a size one of them accepts the others accept too."""
