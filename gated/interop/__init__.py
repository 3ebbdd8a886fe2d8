"""Weight interop with other frameworks: :mod:`gated.interop.torch`."""
