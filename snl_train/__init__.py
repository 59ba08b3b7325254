"""Selective Network Linearization (Algorithm 1) for any torch.nn.Module."""
