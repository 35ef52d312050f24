"""The networks and what they need to run: GIFNet, TIM, the classical rules, weights, ONNX.

The lowest layer: it imports nothing else of the package but itself.
"""
